"""Requests in flight per project, at most so many each: one project cannot hold every connection this server has to
the other nodes and starve the rest (api/relay.py takes a slot for each request it relays, and gives it back when the
answer has been sent or the client went away; services/remote.py one for each call the Responses loop or MCP makes
for the project). Only projects with a request in flight are kept."""

from __future__ import annotations

from cellbox.errors import RateLimited

RETRY_AFTER = 1  # seconds: a slot frees as soon as one of the project's requests ends


class InFlight:
    def __init__(self, per_project: int) -> None:
        self.per_project = per_project
        self._held: dict[str, int] = {}

    def take(self, project: str | None) -> None:
        """Count one more request for ``project``, or raise RateLimited when it has ``per_project`` already. None is
        a server of the cluster, not a client: its own servers cap their clients, so it is not counted."""
        if project is None:
            return
        if self.full(project):
            raise RateLimited(f"Too many requests in flight: this project already has {self.per_project} requests "
                              "relayed to other nodes through this server; wait for one to end.",
                              retry_after=RETRY_AFTER)
        self._held[project] = self._held.get(project, 0) + 1

    def release(self, project: str | None) -> None:
        """Give back a slot ``take`` counted."""
        if project is None:
            return
        if left := self._held[project] - 1:
            self._held[project] = left
        else:
            del self._held[project]

    def full(self, project: str | None) -> bool:
        """Whether ``take`` would refuse ``project`` now."""
        return project is not None and self._held.get(project, 0) >= self.per_project

    def held(self, project: str) -> int:
        """How many requests ``project`` has in flight (for tests and diagnostics)."""
        return self._held.get(project, 0)

    @property
    def tracked(self) -> int:
        """How many projects have a request in flight (for tests and diagnostics)."""
        return len(self._held)
