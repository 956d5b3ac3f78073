"""The README is the manual: every setting must be documented there."""

from pathlib import Path

import pytest

from cellbox.config import Settings

README = (Path(__file__).parents[2] / "README.md").read_text()


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_is_documented(name: str) -> None:
    assert f"CELLBOX_{name.upper()}" in README
