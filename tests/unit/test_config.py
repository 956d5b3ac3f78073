"""Sizes like '1g' and the CELLBOX_* settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from cellbox.config import DEFAULT_PRELOAD, Settings, parse_size
from cellbox.errors import InvalidInput

KIB, MIB, GIB, TIB = 1 << 10, 1 << 20, 1 << 30, 1 << 40


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1g", GIB),
        ("512m", 512 * MIB),
        ("4G", 4 * GIB),
        ("1024", 1024),
        ("1.5g", GIB + GIB // 2),
        ("0.5m", MIB // 2),
        ("64k", 64 * KIB),
        ("2t", 2 * TIB),
        ("16GB", 16 * GIB),
        ("16GiB", 16 * GIB),
        ("100mb", 100 * MIB),
        (" 2 g ", 2 * GIB),
        ("0", 0),
        (4096, 4096),
    ],
)
def test_parse_size_accepts(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    "text",
    ["", " ", "g", "abc", "1x", "-1g", "1.g", ".5g", "1gg", "1 g b", "1e9", "1,5g", "ten", "0x10", "1g!", "1p"],
)
def test_parse_size_rejects_junk(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_size(text)


def test_parse_size_error_names_what_was_wrong() -> None:
    with pytest.raises(InvalidInput, match=r"invalid memory limit 'lots'.*e\.g\. '1g'"):
        parse_size("lots", "memory limit")


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A clean CELLBOX_* environment."""
    for name in list(os.environ):
        if name.upper().startswith("CELLBOX_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_defaults(env: pytest.MonkeyPatch) -> None:
    settings = Settings()
    assert settings.memory_bytes == GIB
    assert settings.disk_quota_bytes == 2 * GIB
    assert settings.tmp_bytes == 512 * MIB
    assert settings.timeout == 60
    assert settings.output_limit == MIB
    assert settings.sandbox_cgroups == "on"
    assert settings.sandbox_disk_quota == "on"
    assert settings.preload == DEFAULT_PRELOAD
    assert (settings.sandbox_uid, settings.sandbox_gid, settings.sandbox_id_count) == (100000, 100000, 65536)
    assert settings.data_dir == Path.home() / ".local/share/cellbox"


def test_preload_default_is_not_shared_between_instances(env: pytest.MonkeyPatch) -> None:
    first = Settings()
    first.preload.append("sympy")
    assert Settings().preload == DEFAULT_PRELOAD


def test_reads_cellbox_environment(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("CELLBOX_DATA_DIR", str(tmp_path))
    env.setenv("CELLBOX_MEMORY_LIMIT", "4g")
    env.setenv("CELLBOX_DISK_QUOTA", "512m")
    env.setenv("CELLBOX_TMP_SIZE", "1.5g")
    env.setenv("CELLBOX_TIMEOUT", "2.5")
    env.setenv("CELLBOX_OUTPUT_LIMIT", "1000")
    env.setenv("CELLBOX_PIDS_LIMIT", "64")
    env.setenv("CELLBOX_SANDBOX_CGROUPS", "off")
    env.setenv("CELLBOX_SANDBOX_DISK_QUOTA", "off")
    env.setenv("CELLBOX_PRELOAD", '["numpy"]')
    env.setenv("CELLBOX_SANDBOX_UID", "200000")
    env.setenv("CELLBOX_SANDBOX_ID_COUNT", "1000")
    settings = Settings()
    assert settings.data_dir == tmp_path
    assert settings.memory_bytes == 4 * GIB
    assert settings.disk_quota_bytes == 512 * MIB
    assert settings.tmp_bytes == GIB + GIB // 2
    assert settings.timeout == 2.5
    assert settings.output_limit == 1000
    assert settings.pids_limit == 64
    assert settings.sandbox_cgroups == "off"
    assert settings.sandbox_disk_quota == "off"
    assert settings.preload == ["numpy"]
    assert (settings.sandbox_uid, settings.sandbox_id_count) == (200000, 1000)


def test_ignores_unrelated_environment(env: pytest.MonkeyPatch) -> None:
    env.setenv("TIMEOUT", "1")
    env.setenv("CELLBOX_NOT_A_SETTING", "x")
    assert Settings().timeout == 60


def test_keyword_arguments_override_the_environment(env: pytest.MonkeyPatch) -> None:
    env.setenv("CELLBOX_TIMEOUT", "5")
    assert Settings(timeout=7).timeout == 7


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CELLBOX_TIMEOUT", "0"),
        ("CELLBOX_TIMEOUT", "-1"),
        ("CELLBOX_TIMEOUT", "soon"),
        ("CELLBOX_OUTPUT_LIMIT", "0"),
        ("CELLBOX_PIDS_LIMIT", "8"),
        ("CELLBOX_OPEN_FILES", "16"),
        ("CELLBOX_CPUS", "0"),
        ("CELLBOX_SANDBOX_UID", "0"),
        ("CELLBOX_SANDBOX_ID_COUNT", "1"),
        ("CELLBOX_SANDBOX_ID_COUNT", "3"),  # the warm pool (2) plus 2 is the least
        ("CELLBOX_SANDBOX_CGROUPS", "maybe"),
        ("CELLBOX_SANDBOX_DISK_QUOTA", "no"),
    ],
)
def test_rejects_invalid_environment(env: pytest.MonkeyPatch, name: str, value: str) -> None:
    env.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def test_bad_sizes_surface_as_invalid_input(env: pytest.MonkeyPatch) -> None:
    env.setenv("CELLBOX_MEMORY_LIMIT", "lots")
    settings = Settings()
    with pytest.raises(InvalidInput, match="memory limit"):
        _ = settings.memory_bytes


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("127.9.0.1", True), ("::1", True),
                                                ("localhost", True), ("0.0.0.0", False), ("::", False),
                                                ("10.1.2.3", False), ("cellbox.example", False)])
def test_only_a_loopback_bind_counts_as_loopback_only(host: str, loopback: bool) -> None:
    assert Settings(host=host).loopback_only is loopback


@pytest.mark.parametrize(("env_vars", "said"), [
    ({"CELLBOX_ROLE": "node"}, "the node role needs CELLBOX_NODE_TOKEN"),
    ({"CELLBOX_ROLE": "api", "CELLBOX_NODE_TOKEN": "t" * 32}, "needs a PostgreSQL CELLBOX_DATABASE_URL"),
    ({"CELLBOX_ROLE": "api", "CELLBOX_NODE_TOKEN": "t" * 32, "CELLBOX_DATABASE_URL": "postgresql+psycopg://h/db"},
     "an object store in CELLBOX_BLOB_URL"),
    ({"CELLBOX_NODE_TOKEN": "short"}, "at least 32 printable ASCII characters"),
    ({"CELLBOX_NODE_TOKEN": "é" * 32}, "at least 32 printable ASCII characters"),
    ({"CELLBOX_NODE_TOKEN": "t" * 31 + " x"}, "no spaces"),
    ({"CELLBOX_ROLE": "everything"}, "Input should be 'all', 'api' or 'node'"),
])
def test_a_role_without_what_it_needs_is_refused(env: pytest.MonkeyPatch, env_vars: dict[str, str],
                                                 said: str) -> None:
    for name, value in env_vars.items():
        env.setenv(name, value)
    with pytest.raises(ValidationError, match=said):
        Settings()


def test_the_roles_that_run_containers(env: pytest.MonkeyPatch) -> None:
    token = {"node_token": "t" * 32}
    assert Settings().runs_containers
    assert Settings(role="node", **token).runs_containers
    assert not Settings(role="api", database_url="postgresql+psycopg://h/db", blob_url="s3://b/p",
                        **token).runs_containers
