"""Running code in a container for a caller: outputs in the Responses API's item shapes (``logs``, ``image``),
and the files the run created or changed registered as container files."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from cellbox.errors import NotFound
from cellbox.ids import execution_id
from cellbox.sandbox.events import Display, Error, Finished, Output, Result, Status, Stream
from cellbox.schemas.containers import ContainerFile, Execution, ExecutionStatus, ImageOutput, LogsOutput
from cellbox.services.containers import Containers
from cellbox.services.metrics import Metrics
from cellbox.store.tables import ContainerFileRow

PNG_URL = "data:image/png;base64,"
STATUS: dict[Status, ExecutionStatus] = {
    "ok": "completed", "error": "failed", "timeout": "timeout", "out_of_memory": "out_of_memory", "crashed": "crashed",
}


def container_file(row: ContainerFileRow) -> ContainerFile:
    return ContainerFile(id=row.id, container_id=row.container_id, created_at=row.created_at, bytes=row.bytes,
                         path=row.path, source=row.source)  # type: ignore[arg-type]


def as_item(output: Output) -> LogsOutput | ImageOutput | None:
    """One engine output as a code_interpreter output item; images become data URLs (checked as base64 in frames)."""
    if isinstance(output, Stream):
        return LogsOutput(logs=output.text)
    if isinstance(output, Display | Result):
        if "image/png" in output.data:
            return ImageOutput(url="data:image/png;base64," + output.data["image/png"])
        text = output.data.get("text/plain")
        return LogsOutput(logs=text + "\n") if text else None
    if isinstance(output, Error):
        return LogsOutput(logs=output.text + "\n")
    return None


def merged(items: list[LogsOutput | ImageOutput]) -> list[LogsOutput | ImageOutput]:
    """Adjacent logs become one, as in OpenAI's code_interpreter_call outputs."""
    out: list[LogsOutput | ImageOutput] = []
    for item in items:
        if isinstance(item, LogsOutput) and out and isinstance(out[-1], LogsOutput):
            out[-1] = LogsOutput(logs=out[-1].logs + item.logs)
        else:
            out.append(item)
    return out


@dataclass
class Update:
    """One step of a streamed execution: an output item as it happens, or the final execution."""

    item: LogsOutput | ImageOutput | None = None
    execution: Execution | None = None


class Executions:
    def __init__(self, containers: Containers, metrics: Metrics | None = None) -> None:
        self._containers = containers
        self._metrics = metrics or Metrics()

    async def stream(self, project: str, cid: str, code: str, timeout: float | None,
                     figures: bool = False) -> AsyncIterator[Update]:
        """The run's outputs as they come, then the execution; with ``figures``, each PNG the code displayed is
        also kept as a container file (named after its own id, as OpenAI does) and listed in its files, so an
        answer can cite it."""
        row, box = await self._containers.sandbox(project, cid)
        started = time.monotonic()
        items: list[LogsOutput | ImageOutput] = []
        async for event in box.execute(code, timeout):
            if isinstance(event, Finished):
                self._metrics.executions.labels(STATUS[event.status]).inc()
                self._metrics.execution_seconds.observe(time.monotonic() - started)
                files = await self._settle(cid, row.last_active_at, event)
                if figures:
                    files += await self._figures(project, cid, items)
                yield Update(execution=Execution(
                    id=execution_id(), container_id=cid, status=STATUS[event.status],
                    outputs=merged(items), files=[container_file(f) for f in files],
                    restarted=event.restarted, message=event.message))
                return
            item = as_item(event)
            if item is not None:
                items.append(item)
                yield Update(item=item)

    async def _settle(self, cid: str, started: int, finished: Finished) -> list[ContainerFileRow]:
        """Register what the run wrote and restart the idle clock, unless the container was deleted meanwhile:
        then the run's own answer (it says so) is the one to give, not a 404 for files nobody can fetch."""
        try:
            files = await self._containers.record(cid, finished.files, finished.deleted)
            await self._containers.touch(cid, started)
        except NotFound:
            return []
        return files

    async def _figures(self, project: str, cid: str, items: list[LogsOutput | ImageOutput]) -> list[ContainerFileRow]:
        kept = []
        for item in items:
            if isinstance(item, ImageOutput) and item.url.startswith(PNG_URL):
                png = base64.b64decode(item.url.removeprefix(PNG_URL), validate=True)  # checked in sandbox.frames
                try:
                    kept.append(await self._containers.add_figure(project, cid, png))
                except NotFound:  # deleted meanwhile: the run's own answer says so
                    break
        return kept

    async def run(self, project: str, cid: str, code: str, timeout: float | None,
                  figures: bool = False) -> Execution:
        async for update in self.stream(project, cid, code, timeout, figures):
            if update.execution is not None:
                return update.execution
        raise RuntimeError("execution ended without a result")  # pragma: no cover
