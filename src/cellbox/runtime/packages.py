"""Packages installed while a session runs: pip installs under ``PIP_PREFIX`` (the host sets it, inside the
workspace), and the running session imports them at once, without a restart.

The template fixed ``sys.path`` before it forked, so each new session adds the prefix's site-packages itself. The
directory is not made until pip makes it (a fresh workspace stays empty), so the session gives the import system
its finder for it up front: left to itself, the import system would remember the missing directory as unusable
for the rest of the session. A FileFinder re-lists its directory whenever the directory's mtime changes (from
"missing" to made, too), which is what makes a package pip just put there importable, even in the same cell.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from importlib.machinery import (
    BYTECODE_SUFFIXES,
    EXTENSION_SUFFIXES,
    SOURCE_SUFFIXES,
    ExtensionFileLoader,
    FileFinder,
    SourceFileLoader,
    SourcelessFileLoader,
)


def use_installed_packages() -> None:
    prefix = os.environ.get("PIP_PREFIX")
    if not prefix:
        return
    site = sysconfig.get_path("purelib", "posix_prefix", vars={"base": prefix, "platbase": prefix})
    os.environ["PYTHONPATH"] = site  # the same for `python` subprocesses, and for pip's view of what is installed
    if site not in sys.path:
        sys.path.insert(1 if sys.path[:1] == [""] else 0, site)  # after the working directory, as PYTHONPATH
    sys.path_importer_cache[site] = FileFinder(site, (ExtensionFileLoader, EXTENSION_SUFFIXES),
                                               (SourceFileLoader, SOURCE_SUFFIXES),
                                               (SourcelessFileLoader, BYTECODE_SUFFIXES))
