"""Nothing inside a container names where the server keeps its data, and the container's init is out of reach.

The engine here has a data directory with a name found nowhere else; code inside looks for it everywhere a
path could linger: environments and command lines in /proc, the mount table, IPython's and matplotlib's
directories, sys.path and the string values of every loaded module.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest

from cellbox.config import Settings
from cellbox.sandbox.engine import Engine
from tests.security.helpers import container, probe

SEARCH = '''
import os, sys


def strings(value, depth=0):
    if isinstance(value, str | bytes):
        yield value if isinstance(value, str) else value.decode(errors="replace")
    elif isinstance(value, list | tuple | set | frozenset) and depth < 2:
        for item in value:
            yield from strings(item, depth + 1)
    elif isinstance(value, dict) and depth < 2:
        for key, item in value.items():
            yield from strings(key, depth + 1)
            yield from strings(item, depth + 1)


def where(marker):
    """Every place the marker was found."""
    found = []
    places = {"os.environ": dict(os.environ), "sys.path": sys.path, "cwd": os.getcwd(),
              "sys.argv": sys.argv, "sys.executable": sys.executable}
    for pid in [p for p in os.listdir("/proc") if p.isdigit()] + ["self"]:
        for name in ("environ", "cmdline", "mountinfo"):
            try:
                places[f"/proc/{pid}/{name}"] = open(f"/proc/{pid}/{name}", "rb").read()
            except OSError:
                pass
    shell = get_ipython()
    places["ipython"] = [shell.ipython_dir, shell.profile_dir.location, shell.home_dir]
    import matplotlib
    places["matplotlib"] = [matplotlib.get_configdir(), matplotlib.get_cachedir()]
    for name, module in list(sys.modules.items()):
        if name == "__main__":
            continue  # the probe's own variables, the marker among them
        places[f"module {name}"] = list(getattr(module, "__dict__", {}).values())
    for place, value in places.items():
        if any(marker in text for text in strings(value)):
            found.append(place)
    return found
'''


@pytest.fixture(scope="module")
async def marked_engine(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Engine, str]]:
    marker = f"cellbox-secret-place-{secrets.token_hex(6)}"
    data_dir = tmp_path_factory.mktemp("paths") / marker
    async with Engine(Settings(data_dir=data_dir, warm_pool=0, timeout=60)) as started:
        yield started, marker


async def test_no_host_data_path_is_visible_inside(marked_engine: tuple[Engine, str]) -> None:
    engine, marker = marked_engine
    assert marker in str(engine.workspaces_dir)
    async with container(engine) as box:
        out = await probe(box, """
            import matplotlib, matplotlib.pyplot as plt
            plt.plot([1, 2])
            plt.savefig("/mnt/data/plot.png")  # uses matplotlib's config and cache directories
            out["found"] = where(marker)
            out["configdir"] = matplotlib.get_configdir()
            out["ipython_dir"] = get_ipython().ipython_dir
        """, setup=SEARCH, marker=marker)
    assert out["found"] == [], out["found"]
    assert out["configdir"] == "/tmp/.matplotlib"
    assert out["ipython_dir"] == "/tmp/.ipython"


async def test_modules_in_the_workspace_import(marked_engine: tuple[Engine, str]) -> None:
    engine, _ = marked_engine
    async with container(engine) as box:
        box.upload("helper.py", b"ANSWER = 42\n")
        result = await box.run("import helper; helper.ANSWER")
    assert result.ok, result.error
    assert result.outputs[-1].data["text/plain"] == "42"


async def test_the_init_is_out_of_reach(marked_engine: tuple[Engine, str]) -> None:
    """ptrace is denied, and /proc/1/mem, environ and fd are closed too: the init is not dumpable."""
    engine, _ = marked_engine
    async with container(engine) as box:
        out = await probe(box, """
            import ctypes, subprocess
            out["mem_rw"] = attempt(open, "/proc/1/mem", "r+b")
            out["mem_r"] = attempt(open, "/proc/1/mem", "rb")
            out["environ"] = attempt(open, "/proc/1/environ", "rb")
            out["fds"] = attempt(os.listdir, "/proc/1/fd")
            out["from_a_child"] = subprocess.run(["cat", "/proc/1/environ"], capture_output=True).returncode
            out["own_fds"] = len(os.listdir("/proc/self/fd")) > 0
            libc = ctypes.CDLL(None)
            out["session_dumpable"] = libc.prctl(3, 0, 0, 0, 0)  # PR_GET_DUMPABLE
        """)
        with open(f"/proc/{box.init_pid}/status") as f:  # seen from the host, while the container lives
            assert "TracerPid:\t0" in f.read()
    assert out == {"mem_rw": "EACCES", "mem_r": "EACCES", "environ": "EACCES", "fds": "EACCES",
                   "from_a_child": 1, "own_fds": True, "session_dumpable": 1}
