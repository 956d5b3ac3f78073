"""Host identities for containers: one uid and gid per live container, from a range the engine hands out and takes
back, because the kernel counts many limits per user (inotify instances and watches, POSIX message queue bytes,
pipe buffers, epoll watches, pending signals, processes) and one container must not use up its neighbours' share.
"""

from __future__ import annotations

import grp
import heapq
import pwd
from pathlib import Path

from cellbox.errors import SandboxUnavailable

MAX_ID = 0xFFFFFFFE  # (uid_t)-1 means "no change" to chown and setresuid
SUBORDINATE_FILES = {"uid": Path("/etc/subuid"), "gid": Path("/etc/subgid")}


class Identities:
    """Slots 0..count-1, slot n being uid ``first_uid + n`` and gid ``first_gid + n``; the lowest free one first."""

    def __init__(self, first_uid: int, first_gid: int, count: int) -> None:
        self.first_uid = first_uid
        self.first_gid = first_gid
        self.count = count
        self._taken: set[int] = set()
        self._free: list[int] = []  # a heap of the free slots below _next
        self._next = 0

    def uid(self, slot: int) -> int:
        return self.first_uid + slot

    def gid(self, slot: int) -> int:
        return self.first_gid + slot

    def slot(self, uid: int, gid: int) -> int | None:
        """The slot whose uid and gid these are, if any (a kept workspace's owner)."""
        slot = uid - self.first_uid
        return slot if 0 <= slot < self.count and gid == self.gid(slot) else None

    def take(self) -> int:
        """The lowest free slot; SandboxUnavailable when every one is in use."""
        if self._free:
            slot = heapq.heappop(self._free)
        elif self._next < self.count:
            slot, self._next = self._next, self._next + 1
        else:
            raise SandboxUnavailable(
                f"all {self.count} sandbox uids are in use by live containers: delete some, or raise "
                "CELLBOX_SANDBOX_ID_COUNT"
            )
        self._taken.add(slot)
        return slot

    def reserve(self, slot: int) -> bool:
        """Take this slot if it is free (a workspace kept from before keeps its uid); False if not."""
        if not 0 <= slot < self.count or slot in self._taken:
            return False
        if slot < self._next:
            self._free.remove(slot)
            heapq.heapify(self._free)
        else:
            self._free.extend(range(self._next, slot))
            heapq.heapify(self._free)
            self._next = slot + 1
        self._taken.add(slot)
        return True

    def release(self, slot: int) -> None:
        """Give a slot back when its container is stopped or destroyed (its processes killed)."""
        self._taken.remove(slot)
        heapq.heappush(self._free, slot)

    def describe(self) -> dict[str, str]:
        """The ranges, for isolation reports."""
        return {"uid": f"{self._span(self.first_uid)} (one per container)",
                "gid": f"{self._span(self.first_gid)} (one per container)"}

    def _span(self, first: int) -> str:
        return f"{first}-{first + self.count - 1}"

    def check_host(self) -> None:
        """Refuse a range holding a host user or group, or a subordinate range delegated to one (/etc/subuid):
        that user would share the containers' per-user limits, could signal them and own their files."""
        clashes = self._clashes()
        if clashes:
            more = f" and {len(clashes) - 1} more" if len(clashes) > 1 else ""
            raise SandboxUnavailable(
                f"the sandbox uid range {self._span(self.first_uid)} (gids {self._span(self.first_gid)}) is not "
                f"free on this host: it holds {clashes[0]}{more}; set CELLBOX_SANDBOX_UID, CELLBOX_SANDBOX_GID and "
                "CELLBOX_SANDBOX_ID_COUNT to a range no one uses"
            )

    def _clashes(self) -> list[str]:
        uids = range(self.first_uid, self.first_uid + self.count)
        gids = range(self.first_gid, self.first_gid + self.count)
        clashes = [f"ids past {MAX_ID}" for ids in (uids, gids) if ids.stop - 1 > MAX_ID]
        clashes += [f"user {user.pw_name} (uid {user.pw_uid})" for user in pwd.getpwall() if user.pw_uid in uids]
        clashes += [f"group {group.gr_name} (gid {group.gr_gid})" for group in grp.getgrall() if group.gr_gid in gids]
        for kind, ids in (("uid", uids), ("gid", gids)):
            path = SUBORDINATE_FILES[kind]
            clashes += [f"the sub{kind}s {start}-{start + length - 1} of {owner} ({path})"
                        for owner, start, length in _subordinate_ranges(path)
                        if start < ids.stop and ids.start < start + length]
        return clashes


def _subordinate_ranges(path: Path) -> list[tuple[str, int, int]]:
    """'name:start:count' lines (newuidmap's delegations to users); malformed lines are skipped."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    ranges = []
    for line in lines:
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            ranges.append((parts[0], int(parts[1]), int(parts[2])))
    return ranges
