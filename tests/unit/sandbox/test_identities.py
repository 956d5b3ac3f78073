"""The uid allocator: the lowest free slot first, slots come back, kept workspaces keep theirs, and a range
that holds a host user, group or subordinate delegation is refused."""

from __future__ import annotations

import grp
import pwd
from pathlib import Path

import pytest

from cellbox.errors import SandboxUnavailable
from cellbox.sandbox import identities
from cellbox.sandbox.identities import Identities


def test_slots_are_handed_out_lowest_first_and_come_back() -> None:
    ids = Identities(100000, 200000, 4)
    assert [ids.take() for _ in range(3)] == [0, 1, 2]
    ids.release(1)
    ids.release(0)
    assert ids.take() == 0
    assert ids.take() == 1
    assert ids.take() == 3
    assert (ids.uid(3), ids.gid(3)) == (100003, 200003)


def test_a_full_range_is_refused_until_a_slot_comes_back() -> None:
    ids = Identities(100000, 100000, 2)
    ids.take()
    ids.take()
    with pytest.raises(SandboxUnavailable, match=r"all 2 sandbox uids are in use.*CELLBOX_SANDBOX_ID_COUNT"):
        ids.take()
    ids.release(1)
    assert ids.take() == 1


def test_reserve_takes_a_particular_free_slot_only() -> None:
    ids = Identities(100000, 100000, 10)
    assert ids.reserve(5)  # beyond every slot handed out so far
    assert not ids.reserve(5)
    assert [ids.take() for _ in range(6)] == [0, 1, 2, 3, 4, 6]
    ids.release(2)
    assert ids.reserve(2)  # below, among the free ones
    assert ids.take() == 7
    assert not ids.reserve(-1)
    assert not ids.reserve(10)


def test_release_of_a_slot_not_taken_is_a_bug() -> None:
    ids = Identities(100000, 100000, 4)
    with pytest.raises(KeyError):
        ids.release(0)


def test_slot_maps_an_owner_back_only_inside_the_range_with_the_matching_gid() -> None:
    ids = Identities(100000, 300000, 10)
    assert ids.slot(100004, 300004) == 4
    assert ids.slot(100004, 300005) is None
    assert ids.slot(99999, 299999) is None
    assert ids.slot(100010, 300010) is None


def test_describe_reports_the_ranges() -> None:
    assert Identities(100000, 100000, 65536).describe() == {"uid": "100000-165535 (one per container)",
                                                            "gid": "100000-165535 (one per container)"}


class FakeHost:
    """The host's users, groups and subordinate ranges (/etc/subuid, /etc/subgid), as a test sets them."""

    def __init__(self, directory: Path) -> None:
        self.users: list[pwd.struct_passwd] = []
        self.groups: list[grp.struct_group] = []
        self.files = {"uid": directory / "subuid", "gid": directory / "subgid"}

    def delegate(self, kind: str, *lines: str) -> None:
        self.files[kind].write_text("".join(f"{line}\n" for line in lines))


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeHost:
    fake = FakeHost(tmp_path)
    monkeypatch.setattr(pwd, "getpwall", lambda: fake.users)
    monkeypatch.setattr(grp, "getgrall", lambda: fake.groups)
    monkeypatch.setattr(identities, "SUBORDINATE_FILES", fake.files)
    return fake


def _user(name: str, uid: int) -> pwd.struct_passwd:
    return pwd.struct_passwd((name, "x", uid, uid, "", "/", "/bin/sh"))


def _group(name: str, gid: int) -> grp.struct_group:
    return grp.struct_group((name, "x", gid, []))


def test_a_free_range_is_accepted(host: FakeHost) -> None:
    host.users = [_user("root", 0), _user("alice", 1000), _user("above", 165536)]
    host.groups = [_group("root", 0), _group("users", 100)]
    host.delegate("uid", "alice:200000:65536", "# a comment", "junk")  # no /etc/subgid at all
    Identities(100000, 100000, 65536).check_host()


def _refusal(host: FakeHost) -> str:
    with pytest.raises(SandboxUnavailable) as caught:
        Identities(100000, 100000, 65536).check_host()
    message = str(caught.value)
    assert "CELLBOX_SANDBOX_UID" in message
    assert "\n" not in message
    return message


def test_a_range_holding_a_host_user_or_group_is_refused(host: FakeHost) -> None:
    host.users = [_user("mallory", 100042)]
    assert "user mallory (uid 100042)" in _refusal(host)
    host.users = []
    host.groups = [_group("ops", 165535)]
    assert "group ops (gid 165535)" in _refusal(host)


def test_a_range_delegated_to_a_user_is_refused(host: FakeHost) -> None:
    """A holder of subordinate ids can become them in a user namespace of its own (rootless podman)."""
    host.delegate("uid", "alice:100000:65536")
    assert "the subuids 100000-165535 of alice" in _refusal(host)
    host.delegate("uid")
    host.delegate("gid", "bob:60000:40001")
    assert "the subgids 60000-100000 of bob" in _refusal(host)


def test_a_range_past_the_largest_id_is_refused(host: FakeHost) -> None:
    with pytest.raises(SandboxUnavailable, match="ids past 4294967294"):
        Identities(0xFFFF0000, 100000, 65536).check_host()
