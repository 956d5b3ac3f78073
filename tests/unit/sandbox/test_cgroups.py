"""Cgroup detection from fake /proc files, and container groups against fake cgroup directories.

Nothing here touches the real /sys/fs/cgroup: every mountinfo, cgroup file and control file is a plain file
under tmp_path. No fake cgroup.procs ever lists a real pid (removal SIGKILLs what it finds there).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from cellbox.errors import SandboxUnavailable
from cellbox.sandbox.cgroups import CONTROLLERS, CPU_PERIOD_US, Cgroups, ContainerGroup, Limits

DEAD_PID = 99_999_999  # above any possible pid_max (2**22): never alive
ENGINE_NAME = re.compile(rf"^cellbox-{os.getpid()}-[0-9a-f]{{6}}$")

# /proc/self/mountinfo and /proc/self/cgroup of this CI host: cgroup v1, plus an (empty) v2 "unified" hierarchy.
V1_MOUNTINFO = """\
22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
23 22 0:5 / /proc rw,nosuid,nodev,noexec,relatime shared:2 - proc proc rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
V1_CGROUP = """\
9:name=systemd:/
8:pids:/
7:blkio:/
6:freezer:/
5:devices:/
4:memory:/process_api/e3388c4b1f79eab1a24d3db910968764
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
"""


def fake_proc(tmp_path: Path, mountinfo: str, cgroup: str) -> Path:
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self/mountinfo").write_text(mountinfo)
    (proc / "self/cgroup").write_text(cgroup)
    return proc


def v2_mountinfo(mount_point: Path, root: str = "/") -> str:
    return (
        "22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
        f"30 22 0:26 {root} {mount_point} rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 "
        "rw,nsdelegate,memory_recursiveprot\n"
    )


# --- detection ----------------------------------------------------------------------------------------


def test_detects_v1_on_a_host_like_ours(tmp_path: Path) -> None:
    cgroups = Cgroups.detect(fake_proc(tmp_path, V1_MOUNTINFO, V1_CGROUP))
    assert cgroups.version == "v1"
    assert set(cgroups.bases) == set(CONTROLLERS)
    assert cgroups.bases["memory"].parent == Path("/sys/fs/cgroup/memory/process_api/e3388c4b1f79eab1a24d3db910968764")
    assert cgroups.bases["pids"].parent == Path("/sys/fs/cgroup/pids")
    assert cgroups.bases["cpu"].parent == Path("/sys/fs/cgroup/cpu")  # not cpuacct or cpuset
    names = {base.name for base in cgroups.bases.values()}
    assert len(names) == 1
    assert ENGINE_NAME.match(names.pop())


def test_detects_v1_with_cpu_and_cpuacct_mounted_together(tmp_path: Path) -> None:
    mountinfo = """\
25 24 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,xattr,name=systemd
29 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,cpu,cpuacct
31 25 0:28 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,memory
33 25 0:30 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,pids
"""
    cgroup = """\
11:pids:/system.slice/cellbox.service
6:memory:/system.slice/cellbox.service
3:cpu,cpuacct:/system.slice/cellbox.service
1:name=systemd:/system.slice/cellbox.service
"""
    cgroups = Cgroups.detect(fake_proc(tmp_path, mountinfo, cgroup))
    assert cgroups.version == "v1"
    assert cgroups.bases["cpu"].parent == Path("/sys/fs/cgroup/cpu,cpuacct/system.slice/cellbox.service")
    assert cgroups.bases["memory"].parent == Path("/sys/fs/cgroup/memory/system.slice/cellbox.service")
    assert cgroups.bases["pids"].parent == Path("/sys/fs/cgroup/pids/system.slice/cellbox.service")


def test_v1_in_a_container_without_a_cgroup_namespace(tmp_path: Path) -> None:
    """Docker on a v1 host (cgroupns=host) mounts the container's own group: mountinfo's root field is
    /docker/<id> and /proc/self/cgroup says /docker/<id> too. The group is the mount point itself; joining the
    full membership path onto the mount point names a directory that does not exist."""
    root = "/docker/4f3c2a"
    mountinfo = "".join(
        f"{40 + i} 31 0:{30 + i} {root} /sys/fs/cgroup/{c} ro,nosuid,nodev,noexec,relatime - cgroup cgroup rw,{c}\n"
        for i, c in enumerate(CONTROLLERS)
    )
    cgroup = "".join(f"{i + 1}:{c}:{root}\n" for i, c in enumerate(CONTROLLERS))
    cgroups = Cgroups.detect(fake_proc(tmp_path, mountinfo, cgroup))
    assert cgroups.version == "v1"
    for controller in CONTROLLERS:
        assert cgroups.bases[controller].parent == Path(f"/sys/fs/cgroup/{controller}")


def test_detects_a_pure_v2_host_with_delegated_controllers(tmp_path: Path) -> None:
    mount = tmp_path / "sys/fs/cgroup"
    own = mount / "system.slice/cellbox.service"
    own.mkdir(parents=True)
    (own / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma misc\n")
    cgroups = Cgroups.detect(fake_proc(tmp_path, v2_mountinfo(mount), "0::/system.slice/cellbox.service\n"))
    assert cgroups.version == "v2"
    assert set(cgroups.bases) == set(CONTROLLERS)
    assert len(set(cgroups.bases.values())) == 1  # one directory for every controller
    base = cgroups.bases["memory"]
    assert base.parent == own
    assert ENGINE_NAME.match(base.name)


def test_v2_at_the_root_of_a_cgroup_namespace(tmp_path: Path) -> None:
    mount = tmp_path / "sys/fs/cgroup"
    mount.mkdir(parents=True)
    (mount / "cgroup.controllers").write_text("cpu memory pids\n")
    cgroups = Cgroups.detect(fake_proc(tmp_path, v2_mountinfo(mount), "0::/\n"))
    assert cgroups.version == "v2"
    assert cgroups.bases["cpu"].parent == mount


def test_v2_missing_controllers_is_refused_with_how_to_fix(tmp_path: Path) -> None:
    mount = tmp_path / "sys/fs/cgroup"
    own = mount / "user.slice/user-1000.slice/session-2.scope"
    own.mkdir(parents=True)
    (own / "cgroup.controllers").write_text("cpu io\n")
    proc = fake_proc(tmp_path, v2_mountinfo(mount), "0::/user.slice/user-1000.slice/session-2.scope\n")
    with pytest.raises(SandboxUnavailable) as info:
        Cgroups.detect(proc)
    message = str(info.value)
    assert "memory" in message
    assert "pids" in message
    assert not re.search(r"\bcpu\b", message.split("controller(s)")[0])  # cpu is offered: not named missing
    assert str(own) in message
    assert "Delegate=yes" in message
    assert "CELLBOX_SANDBOX_CGROUPS=off" in message


def test_v2_with_no_controllers_names_them_all(tmp_path: Path) -> None:
    mount = tmp_path / "sys/fs/cgroup"
    mount.mkdir(parents=True)
    (mount / "cgroup.controllers").write_text("")
    with pytest.raises(SandboxUnavailable, match=r"cpu, memory, pids controller"):
        Cgroups.detect(fake_proc(tmp_path, v2_mountinfo(mount), "0::/\n"))


def test_hybrid_host_missing_a_v1_controller_falls_back_to_the_unified_hierarchy(tmp_path: Path) -> None:
    unified = tmp_path / "sys/fs/cgroup/unified"
    unified.mkdir(parents=True)
    (unified / "cgroup.controllers").write_text("")  # every controller is bound to v1
    mountinfo = "".join(line for line in V1_MOUNTINFO.splitlines(keepends=True) if "rw,pids" not in line)
    mountinfo = mountinfo.replace("/sys/fs/cgroup/unified", str(unified))
    with pytest.raises(SandboxUnavailable, match="pids"):
        Cgroups.detect(fake_proc(tmp_path, mountinfo, V1_CGROUP))


@pytest.mark.parametrize(
    ("mountinfo", "cgroup"),
    [
        ("22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda rw\n", ""),
        ("22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda rw\n", "0::/\n"),
        ("35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n", "4:memory:/\n"),
        ("", ""),
    ],
)
def test_no_usable_cgroups_is_refused_with_how_to_fix(tmp_path: Path, mountinfo: str, cgroup: str) -> None:
    with pytest.raises(SandboxUnavailable) as info:
        Cgroups.detect(fake_proc(tmp_path, mountinfo, cgroup))
    assert "memory, pids and cpu" in str(info.value)
    assert "CELLBOX_SANDBOX_CGROUPS=off" in str(info.value)


# --- container groups ---------------------------------------------------------------------------------


def v1_group(tmp_path: Path, memsw: bool = False) -> ContainerGroup:
    dirs = {c: tmp_path / c / "cellbox-1-abc" / "cntr" for c in CONTROLLERS}
    for directory in dirs.values():
        directory.mkdir(parents=True)
    if memsw:
        (dirs["memory"] / "memory.memsw.limit_in_bytes").write_text("9223372036854771712\n")
    return ContainerGroup("v1", dirs)


def v2_group(tmp_path: Path) -> ContainerGroup:
    directory = tmp_path / "cgroup" / "cellbox-1-abc" / "cntr"
    directory.mkdir(parents=True)
    return ContainerGroup("v2", dict.fromkeys(CONTROLLERS, directory))


LIMITS = Limits(memory_bytes=512 << 20, pids=64, cpus=1.5)


def test_v1_apply_writes_each_controller(tmp_path: Path) -> None:
    group = v1_group(tmp_path)
    group.apply(LIMITS)
    assert (group.dirs["memory"] / "memory.limit_in_bytes").read_text() == str(512 << 20)
    assert not (group.dirs["memory"] / "memory.memsw.limit_in_bytes").exists()  # no swap accounting: left alone
    assert (group.dirs["pids"] / "pids.max").read_text() == "64"
    assert (group.dirs["cpu"] / "cpu.cfs_period_us").read_text() == str(CPU_PERIOD_US)
    assert (group.dirs["cpu"] / "cpu.cfs_quota_us").read_text() == "150000"


def test_v1_apply_limits_swap_too_when_accounted(tmp_path: Path) -> None:
    group = v1_group(tmp_path, memsw=True)
    group.apply(Limits(memory_bytes=1 << 30, pids=10, cpus=0.25))
    assert (group.dirs["memory"] / "memory.memsw.limit_in_bytes").read_text() == str(1 << 30)
    assert (group.dirs["cpu"] / "cpu.cfs_quota_us").read_text() == "25000"


def test_v2_apply_writes_one_directory(tmp_path: Path) -> None:
    group = v2_group(tmp_path)
    group.apply(LIMITS)
    directory = group.dirs["memory"]
    assert (directory / "memory.max").read_text() == str(512 << 20)
    assert (directory / "memory.swap.max").read_text() == "0"
    assert (directory / "memory.oom.group").read_text() == "1"
    assert (directory / "pids.max").read_text() == "64"
    assert (directory / "cpu.max").read_text() == f"150000 {CPU_PERIOD_US}"


def test_procs_files(tmp_path: Path) -> None:
    assert v2_group(tmp_path).procs_files == [str(tmp_path / "cgroup/cellbox-1-abc/cntr/cgroup.procs")]
    v1 = v1_group(tmp_path)
    assert v1.procs_files == sorted(str(v1.dirs[c] / "cgroup.procs") for c in CONTROLLERS)


def test_v1_counters(tmp_path: Path) -> None:
    group = v1_group(tmp_path)
    assert (group.oom_kills(), group.memory_bytes(), group.pids()) == (0, 0, 0)  # files missing
    (group.dirs["memory"] / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n")
    (group.dirs["memory"] / "memory.usage_in_bytes").write_text("123456\n")
    (group.dirs["pids"] / "pids.current").write_text("7\n")
    assert group.oom_kills() == 3
    assert group.memory_bytes() == 123456
    assert group.pids() == 7


def test_v2_counters(tmp_path: Path) -> None:
    group = v2_group(tmp_path)
    assert (group.oom_kills(), group.memory_bytes(), group.pids()) == (0, 0, 0)
    directory = group.dirs["memory"]
    (directory / "memory.events").write_text("low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 4\n")
    (directory / "memory.current").write_text("987654\n")
    (directory / "pids.current").write_text("3\n")
    assert group.oom_kills() == 1  # not oom_group_kill
    assert group.memory_bytes() == 987654
    assert group.pids() == 3


def test_counters_tolerate_garbage(tmp_path: Path) -> None:
    group = v2_group(tmp_path)
    directory = group.dirs["memory"]
    (directory / "memory.events").write_text("oom 1\n")
    (directory / "memory.current").write_text("max\n")
    (directory / "pids.current").write_text("")
    assert (group.oom_kills(), group.memory_bytes(), group.pids()) == (0, 0, 0)


def test_remove_deletes_empty_groups_and_ignores_missing_ones(tmp_path: Path) -> None:
    dirs = {c: tmp_path / c / "cntr" for c in CONTROLLERS}
    for directory in dirs.values():
        directory.mkdir(parents=True)
    group = ContainerGroup("v1", dirs)
    dirs["cpu"].rmdir()  # already gone
    group.remove()
    assert not any(directory.exists() for directory in dirs.values())


# --- the engine's own group ---------------------------------------------------------------------------


def test_prepare_v1_reaps_groups_of_dead_engines_only(tmp_path: Path) -> None:
    parents = {c: tmp_path / c for c in CONTROLLERS}
    for parent in parents.values():
        parent.mkdir()
    stale = parents["memory"] / f"cellbox-{DEAD_PID}-abc123"
    (stale / "cntr_old").mkdir(parents=True)
    alive = parents["memory"] / f"cellbox-{os.getpid()}-def456"
    alive.mkdir()
    unrelated = parents["memory"] / "cellbox-notanengine"
    unrelated.mkdir()

    cgroups = Cgroups("v1", parents)
    cgroups.prepare()

    assert not stale.exists()
    assert alive.is_dir()
    assert unrelated.is_dir()
    for controller, parent in parents.items():
        assert cgroups.bases[controller].parent == parent
        assert cgroups.bases[controller].is_dir()


def test_create_v1_makes_and_limits_a_container_group(tmp_path: Path) -> None:
    parents = {c: tmp_path / c for c in CONTROLLERS}
    for parent in parents.values():
        parent.mkdir()
    cgroups = Cgroups("v1", parents)
    cgroups.prepare()
    group = cgroups.create("cntr_1", LIMITS)
    assert group.version == "v1"
    assert group.dirs == {c: cgroups.bases[c] / "cntr_1" for c in CONTROLLERS}
    assert (group.dirs["pids"] / "pids.max").read_text() == "64"


def test_prepare_v2_enables_controllers_for_the_subtree(tmp_path: Path) -> None:
    own = tmp_path / "cgroup"
    own.mkdir()
    cgroups = Cgroups("v2", dict.fromkeys(CONTROLLERS, own))
    cgroups.prepare()
    base = cgroups.bases["memory"]
    wanted = {"+memory", "+pids", "+cpu"}
    assert set((own / "cgroup.subtree_control").read_text().split()) == wanted
    assert set((base / "cgroup.subtree_control").read_text().split()) == wanted
    group = cgroups.create("cntr_2", LIMITS)
    assert set(group.dirs.values()) == {base / "cntr_2"}
    assert (base / "cntr_2/cpu.max").read_text() == f"150000 {CPU_PERIOD_US}"


def test_prepare_reports_an_unusable_hierarchy(tmp_path: Path) -> None:
    parents = {c: tmp_path / "not-mounted" / c for c in CONTROLLERS}
    with pytest.raises(SandboxUnavailable, match=r"cannot create cgroups.*CELLBOX_SANDBOX_CGROUPS=off"):
        Cgroups("v1", parents).prepare()


def test_remove_kills_a_v2_group_through_cgroup_kill(tmp_path: Path) -> None:
    """cgroup.kill takes the whole subtree at once, so a fork cannot slip past a pid-by-pid kill."""
    directory = tmp_path / "cntr"
    directory.mkdir()
    (directory / "cgroup.kill").write_text("")
    (directory / "cgroup.procs").write_text("")
    written = []
    real_rmdir = os.rmdir

    def rmdir(path: Path) -> None:  # cgroupfs removes its own files with the group; a tmp dir does not
        written.append((Path(path) / "cgroup.kill").read_text())
        for name in ("cgroup.kill", "cgroup.procs"):
            (Path(path) / name).unlink()
        real_rmdir(path)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "rmdir", rmdir)
        ContainerGroup("v2", dict.fromkeys(CONTROLLERS, directory)).remove()
    assert written == ["1"]
    assert not directory.exists()
