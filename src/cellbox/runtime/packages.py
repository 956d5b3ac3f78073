"""Packages installed while a session runs: pip installs under ``PIP_PREFIX`` (the host sets it, inside the
workspace), and the running session imports them at once, without a restart.

The template fixed ``sys.path`` before it forked, so each new session adds the prefix's site-packages itself. The
directory is made first: the import system remembers a missing path entry as unusable, but it re-lists an existing
one whenever its mtime changes, which is what makes a package pip just put there importable.
"""

from __future__ import annotations

import contextlib
import os
import sys
import sysconfig


def use_installed_packages() -> None:
    prefix = os.environ.get("PIP_PREFIX")
    if not prefix:
        return
    site = sysconfig.get_path("purelib", "posix_prefix", vars={"base": prefix, "platbase": prefix})
    with contextlib.suppress(OSError):  # a full or broken workspace: pip will say so when it is used
        os.makedirs(site, exist_ok=True)
    os.environ["PYTHONPATH"] = site  # the same for `python` subprocesses, and for pip's view of what is installed
    if site not in sys.path:
        sys.path.insert(1 if sys.path[:1] == [""] else 0, site)  # after the working directory, as PYTHONPATH
