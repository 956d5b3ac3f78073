"""The environment a container's code starts with: built from constants, never from the server's own."""

from __future__ import annotations

HOME = "/tmp"


def sandbox_environment(python_bin: str) -> dict[str, str]:
    """What ``os.environ`` holds in a new session; ``python_bin`` is the sandbox Python's bin directory."""
    return {
        "HOME": HOME,
        "PATH": f"{python_bin}:/usr/local/bin:/usr/bin:/bin",
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
    }
