"""GET /v1/models lists what the server routes: its aliases, then what the model server says it serves."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from tests.integration.api.server import Server, client
from tests.upstream import ScriptedUpstream


def test_models_are_the_aliases_and_the_model_servers(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    upstream.script("served-model", {"text": "x"})
    server = Server(tmp_path, CELLBOX_UPSTREAM_BASE_URL=upstream.url,
                    CELLBOX_MODEL_ALIASES="gpt-4.1=served-model,*=served-model").start()
    try:
        with client(server) as sdk:
            models = {m.id: m.owned_by for m in sdk.models.list()}
            assert models["gpt-4.1"] == "cellbox"
            assert models["served-model"] == "upstream"
            assert "*" not in models
            assert sdk.models.retrieve("gpt-4.1").id == "gpt-4.1"
            with pytest.raises(openai.NotFoundError):
                sdk.models.retrieve("nope")
    finally:
        server.stop()


def test_without_a_model_server_there_are_no_models(tmp_path: Path) -> None:
    server = Server(tmp_path, CELLBOX_UPSTREAM_BASE_URL="").start()
    try:
        with client(server) as sdk:
            assert list(sdk.models.list()) == []
    finally:
        server.stop()
