"""pip in a running session, through the real server and the egress proxy: packages come from the operator's
index (CELLBOX_PIP_INDEX_URL, allowed implicitly), install into the workspace (counted against its quota, never
listed as container files), import at once and in every later session. The index is a local HTTPS server with
wheels made by hand, reached through a CELLBOX_EGRESS_RESOLVE mapping: nothing leaves the machine."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.echo_servers import UpstreamAuthority, echo_server, make_wheel, package_index
from tests.integration.api.server import Server, client, raw

INDEX = "pypi.internal"  # outside the permit list: reachable only because the operator named it as the index
QUOTA = 64 << 20
BULKY = 4 << 20  # bytes of incompressible data in the bulky package


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("wheels")
    make_wheel(directory, "cellbox-demo", "1.0", {
        "cellbox_demo/__init__.py": b"VALUE = 42\n\ndef main():\n    print('demo script ran')\n"},
        entry_points="[console_scripts]\ncellbox-demo = cellbox_demo:main\n")
    make_wheel(directory, "cellbox-plus", "2.0", {
        "cellbox_plus.py": b"import cellbox_demo\nPLUS = cellbox_demo.VALUE + 1\n"}, requires=("cellbox-demo>=1",))
    make_wheel(directory, "cellbox-bulky", "1.0", {
        "cellbox_bulky/__init__.py": b"", "cellbox_bulky/blob.bin": os.urandom(BULKY)})
    return directory


@pytest.fixture(scope="module")
def pip_server(tmp_path_factory: pytest.TempPathFactory, wheels: Path) -> Iterator[Server]:
    certs = UpstreamAuthority(tmp_path_factory.mktemp("pip-certs"))
    with contextlib.ExitStack() as stack:
        port, requests = stack.enter_context(package_index(wheels, certs.server_context(INDEX)))
        api = stack.enter_context(echo_server("api", certs.server_context("api.test")))
        running = Server(tmp_path_factory.mktemp("pip-data"), CELLBOX_EGRESS_PERMIT="*.test",
                         CELLBOX_PIP_INDEX_URL=f"https://{INDEX}/simple/", CELLBOX_DISK_QUOTA=str(QUOTA),
                         CELLBOX_EGRESS_RESOLVE=f"{INDEX}=127.0.0.1:{port},api.test=127.0.0.1:{api}",
                         CELLBOX_EGRESS_CA_BUNDLE=str(certs.bundle)).start()
        running.index_requests = requests  # type: ignore[attr-defined]
        yield running
        running.stop()


@pytest.fixture
def sdk(pip_server: Server) -> Iterator[openai.OpenAI]:
    with client(pip_server) as made:
        yield made


@pytest.fixture
def box(sdk: openai.OpenAI) -> Iterator[str]:
    made = sdk.containers.create(name="pip", network_policy={  # type: ignore[arg-type]
        "type": "allowlist", "allowed_domains": ["api.test"]})
    yield made.id
    with contextlib.suppress(openai.NotFoundError):
        sdk.containers.delete(made.id)


def run(server: Server, cid: str, code: str) -> tuple[str, dict]:
    with raw(server) as http:
        done = http.post(f"/v1/containers/{cid}/execute", json={"code": code, "timeout": 300})
    assert done.status_code == 200, done.text
    body = done.json()
    return "".join(o["logs"] for o in body["outputs"] if o["type"] == "logs"), body


def test_pip_installs_from_the_operators_index_into_the_running_session(pip_server: Server, sdk: openai.OpenAI,
                                                                        box: str) -> None:
    # Imports before the install (the package directory does not exist yet) must not spoil the ones after it.
    out, _ = run(pip_server, box, "import os, json\ntry:\n    import cellbox_demo\nexcept ImportError:\n"
                 "    print(os.listdir('/mnt/data'))")
    assert out == "[]\n"  # a fresh workspace is empty until pip is used
    out, _ = run(pip_server, box, "%pip install cellbox-demo\nimport cellbox_demo\nprint(cellbox_demo.VALUE)")
    assert "Successfully installed cellbox-demo-1.0" in out, out
    assert out.endswith("42\n")  # importable in the same cell
    out, _ = run(pip_server, box, "import cellbox_demo\nprint(cellbox_demo.VALUE, cellbox_demo.__file__)")
    value, where = out.split()
    assert value == "42"
    assert where.startswith("/mnt/data/.cellbox/python/lib/python3.")
    assert where.endswith("/cellbox_demo/__init__.py")
    out, _ = run(pip_server, box, "!cellbox-demo\n!python -c 'import cellbox_demo; print(cellbox_demo.VALUE)'")
    assert out.splitlines() == ["demo script ran", "42"]  # its script on PATH, and subprocesses see it

    # The shell form, and a dependency already installed is found, not fetched again.
    out, _ = run(pip_server, box, "!pip install cellbox-plus")
    assert "Successfully installed cellbox-plus-2.0" in out
    assert "Requirement already satisfied: cellbox-demo" in out
    assert run(pip_server, box, "import cellbox_plus\nprint(cellbox_plus.PLUS)")[0] == "43\n"
    assert any(path.startswith("/simple/cellbox-plus") for path in pip_server.index_requests)  # type: ignore[attr-defined]

    # Installed packages are Cellbox's own: not container files, and the allowlist shown is the tenant's.
    assert not [f.path for f in sdk.containers.files.list(box) if ".cellbox" in f.path]
    assert sdk.containers.retrieve(box).network_policy.allowed_domains == ["api.test"]  # type: ignore[union-attr]

    # A new session (the old one exited) imports them too.
    _, ended = run(pip_server, box, "import os\nos._exit(0)")
    assert ended["status"] != "completed"
    assert run(pip_server, box, "import cellbox_plus\nprint(cellbox_plus.PLUS)")[0] == "43\n"


def test_packages_count_against_the_workspace_quota(pip_server: Server, box: str) -> None:
    fill = ("import os, shutil\nfree = shutil.disk_usage('/mnt/data').free\n"
            "fd = os.open('/mnt/data/filler', os.O_CREAT | os.O_WRONLY)\n"
            f"os.posix_fallocate(fd, 0, free - {BULKY // 4})\nos.close(fd)\nprint(shutil.disk_usage('/mnt/data').free)")
    assert int(run(pip_server, box, fill)[0]) < BULKY
    out, _ = run(pip_server, box, "%pip install cellbox-bulky")
    assert "No space left on device" in out, out
    run(pip_server, box, "import os\nos.remove('/mnt/data/filler')")
    out, _ = run(pip_server, box, "%pip install cellbox-bulky")
    assert "Successfully installed cellbox-bulky-1.0" in out, out
    out, _ = run(pip_server, box, "import shutil, cellbox_bulky, os\n"
                 "print(os.path.getsize(os.path.dirname(cellbox_bulky.__file__) + '/blob.bin'))")
    assert out == f"{BULKY}\n"


def test_a_container_without_network_installs_an_uploaded_wheel(pip_server: Server, sdk: openai.OpenAI,
                                                                wheels: Path) -> None:
    offline = sdk.containers.create(name="offline")
    try:
        wheel = next(wheels.glob("cellbox_demo-*.whl"))
        sdk.containers.files.create(offline.id, file=(wheel.name, wheel.read_bytes()))
        out, _ = run(pip_server, offline.id, f"%pip install --no-index /mnt/data/{wheel.name}\n"
                     "import cellbox_demo\nprint(cellbox_demo.VALUE)")
        assert "Successfully installed cellbox-demo-1.0" in out, out
        assert out.endswith("42\n")
        out, _ = run(pip_server, offline.id, "%pip install cellbox-plus")  # no index reachable: pip says so
        assert "No matching distribution found for cellbox-plus" in out, out
        # A package the image has cannot be replaced: the installation is read-only, and the image's stays.
        fake = make_wheel(wheels.parent, "numpy", "99.0", {"numpy/__init__.py": b"__version__ = '99.0'\n"})
        sdk.containers.files.create(offline.id, file=(fake.name, fake.read_bytes()))
        out, _ = run(pip_server, offline.id, f"%pip install --no-index /mnt/data/{fake.name}\n"
                     "import numpy\nprint(numpy.__version__)")
        assert "ERROR" in out, out
        assert not out.endswith("99.0\n")
        version = run(pip_server, offline.id, "!python -c 'import numpy; print(numpy.__version__)'")[0]
        assert not version.startswith("99")
    finally:
        sdk.containers.delete(offline.id)


def test_tenants_may_name_the_index_and_health_shows_it(pip_server: Server, sdk: openai.OpenAI) -> None:
    named = sdk.containers.create(name="index-only", network_policy={  # type: ignore[arg-type]
        "type": "allowlist", "allowed_domains": [INDEX]})
    sdk.containers.delete(named.id)
    with raw(pip_server) as http:
        egress = http.get("/health").json()["egress"]
    assert egress["pip_index_url"] == f"https://{INDEX}/simple/"
    assert egress["permit"] == ["*.test", INDEX]
