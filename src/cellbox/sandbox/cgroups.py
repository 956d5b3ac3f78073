"""Per-container resource limits with cgroups: v1 (separate memory, pids and cpu hierarchies) or v2 (a
delegated subtree). Every container gets its own group under a per-engine group inside the server's own
cgroup, so limits nest under whatever limits the server already has.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from cellbox.errors import SandboxUnavailable

CONTROLLERS = ("memory", "pids", "cpu")
CPU_PERIOD_US = 100_000
_ENGINE_DIR = re.compile(r"^cellbox-(\d+)-[0-9a-f]+$")


@dataclass(frozen=True)
class Limits:
    memory_bytes: int
    pids: int
    cpus: float


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _read(path: Path) -> str:
    with open(path) as f:
        return f.read()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_and_remove(group: Path, procs_file: str = "cgroup.procs", patience: float = 3.0) -> None:
    """SIGKILL what is left in a group and remove it. cgroup v2's ``cgroup.kill`` kills the whole subtree at once
    (no fork can slip past it); otherwise every listed pid is killed. Killed processes take a moment to exit,
    and a group that just had an OOM kill stays busy briefly: poll, backing off from 0.5 ms to 20 ms (a group
still busy after ``patience`` seconds is left for the engine's sweep at close)."""
    deadline, pause = time.monotonic() + patience, 0.0005
    with contextlib.suppress(OSError):  # absent before Linux 5.14 and in v1, where nothing may create it
        kill = os.open(group / "cgroup.kill", os.O_WRONLY)
        try:
            os.write(kill, b"1")
        finally:
            os.close(kill)
    while True:
        with contextlib.suppress(FileNotFoundError):
            for pid in _read(group / procs_file).split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        try:
            os.rmdir(group)
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                return
            time.sleep(pause)
            pause = min(pause * 2, 0.02)


@dataclass
class ContainerGroup:
    """The cgroup(s) of one container."""

    version: str
    dirs: dict[str, Path]  # controller -> directory (v2: one directory under every key)

    @property
    def procs_files(self) -> list[str]:
        return sorted({str(d / "cgroup.procs") for d in self.dirs.values()})

    def apply(self, limits: Limits) -> None:
        if self.version == "v1":
            memory = self.dirs["memory"]
            memsw = memory / "memory.memsw.limit_in_bytes"
            if memsw.exists():  # memory+swap may never be below memory: lift it before a change, set it after
                _write(memsw, "-1")
            _write(memory / "memory.limit_in_bytes", str(limits.memory_bytes))
            if memsw.exists():
                _write(memsw, str(limits.memory_bytes))
            _write(self.dirs["pids"] / "pids.max", str(limits.pids))
            _write(self.dirs["cpu"] / "cpu.cfs_period_us", str(CPU_PERIOD_US))
            _write(self.dirs["cpu"] / "cpu.cfs_quota_us", str(int(limits.cpus * CPU_PERIOD_US)))
        else:
            group = self.dirs["memory"]
            _write(group / "memory.max", str(limits.memory_bytes))
            with contextlib.suppress(FileNotFoundError):
                _write(group / "memory.swap.max", "0")
            _write(group / "memory.oom.group", "1")
            _write(group / "pids.max", str(limits.pids))
            _write(group / "cpu.max", f"{int(limits.cpus * CPU_PERIOD_US)} {CPU_PERIOD_US}")

    def oom_kills(self) -> int:
        name = "memory.oom_control" if self.version == "v1" else "memory.events"
        try:
            text = _read(self.dirs["memory"] / name)
        except FileNotFoundError:
            return 0
        match = re.search(r"^oom_kill (\d+)$", text, re.MULTILINE)
        return int(match.group(1)) if match else 0

    def memory_bytes(self) -> int:
        name = "memory.usage_in_bytes" if self.version == "v1" else "memory.current"
        try:
            return int(_read(self.dirs["memory"] / name))
        except (FileNotFoundError, ValueError):
            return 0

    def pids(self) -> int:
        try:
            return int(_read(self.dirs["pids"] / "pids.current"))
        except (FileNotFoundError, ValueError):
            return 0

    def remove(self) -> None:
        for directory in {*self.dirs.values()}:
            _kill_and_remove(directory)


class Cgroups:
    """Finds a usable cgroup hierarchy, owns this engine's group in it, and makes container groups."""

    def __init__(self, version: str, parents: dict[str, Path]) -> None:
        self.version = version
        self._name = f"cellbox-{os.getpid()}-{secrets.token_hex(3)}"
        self.bases = {c: p / self._name for c, p in parents.items()}

    @classmethod
    def detect(cls, proc: Path = Path("/proc")) -> Cgroups:
        """The v1 memory+pids+cpu hierarchies if mounted, else a delegated v2 subtree; or a clear error."""
        mounts = _cgroup_mounts(proc / "self/mountinfo")
        memberships = _memberships(proc / "self/cgroup")
        v1 = {c: _own_group(mounts[c], memberships[c]) for c in CONTROLLERS if c in mounts and c in memberships}
        if len(v1) == len(CONTROLLERS):
            return cls("v1", v1)
        if "" in mounts and "" in memberships:
            own = _own_group(mounts[""], memberships[""])
            missing = set(CONTROLLERS) - set(_read(own / "cgroup.controllers").split())
            if not missing:
                return cls("v2", dict.fromkeys(CONTROLLERS, own))
            raise SandboxUnavailable(
                f"cgroup v2 at {own} does not offer the {', '.join(sorted(missing))} controller(s) to Cellbox. "
                "Run the server in a delegated subtree, e.g. `systemd-run --scope -p Delegate=yes ...`, "
                "or set CELLBOX_SANDBOX_CGROUPS=off to run without resource limits (weaker isolation)."
            )
        raise SandboxUnavailable(
            "no cgroup hierarchy with the memory, pids and cpu controllers is mounted; mount cgroup2 at "
            "/sys/fs/cgroup with a delegated subtree, or set CELLBOX_SANDBOX_CGROUPS=off (weaker isolation)."
        )

    def prepare(self) -> None:
        """Create this engine's group (after removing groups left by engines that died)."""
        for parent in {b.parent for b in self.bases.values()}:
            self._reap_stale(parent)
        try:
            if self.version == "v2":
                self._delegate_v2(next(iter(self.bases.values())).parent)
            for base in {*self.bases.values()}:
                base.mkdir(exist_ok=True)
            if self.version == "v2":
                base = next(iter(self.bases.values()))
                _write(base / "cgroup.subtree_control", " ".join("+" + c for c in CONTROLLERS))
        except OSError as exc:
            raise SandboxUnavailable(
                f"cannot create cgroups under {next(iter(self.bases.values())).parent}: {exc.strerror}. "
                "Run Cellbox as root or give it a writable (delegated) cgroup subtree, or set "
                "CELLBOX_SANDBOX_CGROUPS=off to run without resource limits (weaker isolation)."
            ) from exc

    def _delegate_v2(self, own: Path) -> None:
        """v2 forbids processes in inner groups: move ours into a leaf before enabling controllers below."""
        wanted = " ".join("+" + c for c in CONTROLLERS)
        try:
            _write(own / "cgroup.subtree_control", wanted)
        except OSError:
            leaf = own / "cellbox-server"
            leaf.mkdir(exist_ok=True)
            for pid in _read(own / "cgroup.procs").split():
                with contextlib.suppress(ProcessLookupError, OSError):
                    _write(leaf / "cgroup.procs", pid)
            _write(own / "cgroup.subtree_control", wanted)

    @staticmethod
    def _reap_stale(parent: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            for entry in parent.iterdir():
                match = _ENGINE_DIR.match(entry.name)
                if match and entry.is_dir() and not _pid_alive(int(match.group(1))):
                    for child in entry.iterdir():
                        if child.is_dir():
                            _kill_and_remove(child)
                    _kill_and_remove(entry)

    def create(self, name: str, limits: Limits) -> ContainerGroup:
        dirs = {c: base / name for c, base in self.bases.items()}
        group = ContainerGroup(self.version, dirs)
        try:
            for directory in {*dirs.values()}:
                directory.mkdir()
            group.apply(limits)
        except OSError:
            group.remove()
            raise
        return group

    def close(self) -> None:
        for base in {*self.bases.values()}:
            with contextlib.suppress(FileNotFoundError):
                for child in base.iterdir():
                    if child.is_dir():
                        _kill_and_remove(child)
            _kill_and_remove(base)


def _own_group(mount: tuple[Path, str], membership: str) -> Path:
    """Our group's directory: the membership path is relative to the hierarchy's root, and the mount may
    expose only a subtree of it (a container without its own cgroup namespace mounts /docker/<id>)."""
    mount_point, mount_root = mount
    relative = os.path.relpath(membership, mount_root) if membership.startswith(mount_root) else membership
    relative = relative.lstrip("/")
    return mount_point if relative in ("", ".") else mount_point / relative


def _cgroup_mounts(mountinfo: Path) -> dict[str, tuple[Path, str]]:
    """controller -> (mount point, root of the hierarchy it shows); the key "" is the cgroup2 mount."""
    found: dict[str, tuple[Path, str]] = {}
    for line in _read(mountinfo).splitlines():
        pre, _, post = line.partition(" - ")
        fields, post_fields = pre.split(), post.split()
        if len(post_fields) < 3:
            continue
        fstype, options = post_fields[0], post_fields[2].split(",")
        mount = (Path(fields[4]), fields[3])
        if fstype == "cgroup2":
            found.setdefault("", mount)
        elif fstype == "cgroup":
            for controller in CONTROLLERS:
                if controller in options:
                    found.setdefault(controller, mount)
    return found


def _memberships(cgroup_file: Path) -> dict[str, str]:
    """controller -> this process's path in that hierarchy; the key "" is the v2 path."""
    found: dict[str, str] = {}
    for line in _read(cgroup_file).splitlines():
        _, controllers, path = line.split(":", 2)
        if not controllers:
            found[""] = path
        for controller in controllers.split(","):
            if controller:
                found[controller] = path
    return found
