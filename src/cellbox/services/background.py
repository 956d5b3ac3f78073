"""Background responses: runs that go on without their client. ``POST /v1/responses`` with ``background: true``
answers at once (``queued``); the run's events are kept in memory, whole (code outputs included, for each stream's
own ``include`` to filter), so a client may poll the response, stream it, or reconnect and resume after any sequence
number, until a while after it ends. A project runs a bounded number at once; ``cancel`` stops one (its running code
is interrupted) and it ends ``cancelled``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from cellbox.errors import InvalidInput, RateLimited
from cellbox.schemas.responses import ResponseError
from cellbox.services.responses import Responses, Run

log = logging.getLogger(__name__)
KEEP_SECONDS = 600.0  # how long a finished run's events stay, for late pollers and resumed streams
KEEP_AT_MOST = 200  # finished runs kept at most (the oldest go first)


@dataclass
class _Job:
    run: Run
    events: list[dict[str, Any]] = field(default_factory=list)
    grew: asyncio.Event = field(default_factory=asyncio.Event)  # set, and replaced, on every new event
    task: asyncio.Task[None] | None = None
    ended_at: float | None = None

    @property
    def done(self) -> bool:
        return self.ended_at is not None


class Background:
    def __init__(self, responses: Responses, per_project: int) -> None:
        self._responses = responses
        self._per_project = per_project
        self._jobs: dict[str, _Job] = {}

    def _running(self, project: str) -> int:
        return sum(1 for job in self._jobs.values() if job.run.project == project and not job.done)

    def _forget_old(self) -> None:
        ended = sorted((job.ended_at, rid) for rid, job in self._jobs.items() if job.ended_at is not None)
        cutoff = time.monotonic() - KEEP_SECONDS
        for n, (ended_at, rid) in enumerate(ended):
            if ended_at < cutoff or len(ended) - n > KEEP_AT_MOST:
                del self._jobs[rid]

    async def start(self, run: Run) -> dict[str, Any]:
        """Begin a run that needs no client; the response as it stands (``queued``), whole."""
        if not run.body.store:
            raise InvalidInput("background responses must be stored (store=true): they are polled by id", "store")
        self._forget_old()
        if self._running(run.project) >= self._per_project:
            raise RateLimited(f"this project already runs {self._per_project} background responses; wait for one "
                              "to finish or cancel one", retry_after=5)
        run.response.status, run.response.background = "queued", True
        await self._responses.begin(run)
        job = _Job(run)
        self._jobs[run.response.id] = job
        job.task = asyncio.create_task(self._drive(job), name=f"cellbox-background-{run.response.id}")
        return run.snapshot()

    async def _drive(self, job: _Job) -> None:
        try:
            async for event in self._responses.events(job.run):
                self._append(job, event)
        except asyncio.CancelledError:
            pass  # cancelled or shut down: events() has stored how far it got
        except Exception:
            log.exception("background response %s failed", job.run.response.id)
        finally:
            job.ended_at = time.monotonic()
            job.grew.set()

    @staticmethod
    def _append(job: _Job, event: dict[str, Any]) -> None:
        job.events.append(event)
        job.grew.set()
        job.grew = asyncio.Event()

    def _job(self, project: str, rid: str) -> _Job | None:
        job = self._jobs.get(rid)
        return job if job is not None and job.run.project == project else None

    def snapshot(self, project: str, rid: str) -> dict[str, Any] | None:
        """The live response of a background run this server is running, if it is one: whole, code outputs
        included, for the caller's own ``include`` to filter (not the one the run was created with)."""
        job = self._job(project, rid)
        return job.run.response.model_dump() if job is not None and not job.done else None

    async def cancel(self, project: str, rid: str) -> dict[str, Any]:
        job = self._job(project, rid)
        if job is None:
            stored = await self._responses.get(project, rid, [])  # a 404 for an unknown id
            if stored.get("background") and stored.get("status") in ("completed", "failed", "incomplete",
                                                                       "cancelled"):
                return stored  # already over: nothing to stop
            raise InvalidInput("only background responses can be cancelled; close the stream to stop a streamed "
                               "response", "response_id")
        if not job.done and job.task is not None:
            job.run.response.status = "cancelled"
            job.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await job.task
            await self._responses.settled()
        return await self._responses.get(project, rid, [])

    async def stream(self, project: str, rid: str, after: int = -1) -> AsyncIterator[dict[str, Any]]:
        """Every event after sequence number ``after``, then the new ones as they come, until the run ends; whole,
        for the caller to show with its own ``include``."""
        job = self._job(project, rid)
        if job is None:
            await self._responses.get(project, rid, [])  # a 404 for an unknown id
            raise InvalidInput("only a background response can be streamed again, while it runs and for "
                               f"{KEEP_SECONDS / 60:g} minutes after", "stream")
        return self._follow(job, after)

    @staticmethod
    async def _follow(job: _Job, after: int) -> AsyncIterator[dict[str, Any]]:
        sent = after + 1
        while True:
            grew = job.grew
            while sent < len(job.events):
                yield job.events[sent]
                sent += 1
            if job.done:
                return
            await grew.wait()

    async def aclose(self) -> None:
        """Shutting down: running ones end ``failed`` and say why (a restart would find them unfinished)."""
        running = [job for job in self._jobs.values() if not job.done and job.task is not None]
        for job in running:
            job.run.response.status = "failed"
            job.run.response.error = ResponseError(code="server_error",
                                                   message="the server stopped while this response ran")
            assert job.task is not None
            job.task.cancel()
        await asyncio.gather(*(job.task for job in running if job.task), return_exceptions=True)
        await self._responses.settled()
