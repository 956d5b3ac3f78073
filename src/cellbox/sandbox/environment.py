"""The environment a container's code starts with: built from constants, never from the server's own."""

from __future__ import annotations

from cellbox.sandbox.workspace import MOUNT_POINT, RESERVED

HOME = "/tmp"
# pip installs here (PIP_PREFIX): inside the workspace, so packages count against its quota and survive a restart.
PACKAGES = f"{MOUNT_POINT}/{RESERVED}/python"


def sandbox_environment(python_bin: str) -> dict[str, str]:
    """What ``os.environ`` holds in a new session; ``python_bin`` is the sandbox Python's bin directory."""
    return {
        "HOME": HOME,
        "PATH": f"{python_bin}:{PACKAGES}/bin:/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TMPDIR": "/tmp",
        "USER": "sandbox",
        "LOGNAME": "sandbox",
        "SHELL": "/bin/sh",
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        "MPLCONFIGDIR": f"{HOME}/.matplotlib",
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
        "TERM": "dumb",
        "PIP_PREFIX": PACKAGES,
        "PIP_NO_CACHE_DIR": "1",  # a cache would live in /tmp, which is memory
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",  # a look at pypi.org the proxy would refuse, with a warning
        "PIP_PROGRESS_BAR": "off",  # output is captured: bars would be noise
        "PIP_NO_INPUT": "1",
    }
