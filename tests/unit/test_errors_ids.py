"""The exception tree and identifiers."""

from __future__ import annotations

import re
import time

import pytest

from cellbox import errors, ids
from cellbox.errors import InvalidInput


def test_invalid_input_carries_the_parameter() -> None:
    exc = InvalidInput("bad size", "memory")
    assert str(exc) == "bad size"
    assert exc.param == "memory"
    assert InvalidInput("no param").param is None


def test_errors_module_has_no_http() -> None:
    assert not any("http" in name.lower() for name in vars(errors))


def test_container_id_shape() -> None:
    cid = ids.container_id()
    assert re.fullmatch(r"cntr_[0-9a-f]{48}", cid)


@pytest.mark.parametrize(("prefix", "hex_chars"), [("file-", 24), ("exec_", 8), ("", 2)])
def test_new_id_shape(prefix: str, hex_chars: int) -> None:
    value = ids.new_id(prefix, hex_chars)
    assert value.startswith(prefix)
    assert re.fullmatch(f"[0-9a-f]{{{hex_chars}}}", value[len(prefix):])


def test_ids_are_unique() -> None:
    assert len({ids.container_id() for _ in range(1000)}) == 1000


def test_now_is_integer_unix_seconds() -> None:
    before = int(time.time())
    value = ids.now()
    after = int(time.time())
    assert isinstance(value, int)
    assert before <= value <= after
