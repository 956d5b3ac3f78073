"""What an execution produces, as typed values: streamed outputs and the final result."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Status = Literal["ok", "error", "timeout", "out_of_memory", "crashed"]


@dataclass(frozen=True)
class Stream:
    name: str  # "stdout" | "stderr"
    text: str
    type: Literal["stream"] = "stream"


@dataclass(frozen=True)
class Display:
    """Rich output (``display()``, figures): a MIME bundle, binary types base64-encoded."""

    data: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)
    type: Literal["display"] = "display"


@dataclass(frozen=True)
class Result:
    """The value of the cell's last expression."""

    data: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)
    type: Literal["result"] = "result"


@dataclass(frozen=True)
class Error:
    ename: str
    evalue: str
    traceback: list[str]
    type: Literal["error"] = "error"

    @property
    def text(self) -> str:
        return "\n".join(self.traceback) if self.traceback else f"{self.ename}: {self.evalue}"


Output = Stream | Display | Result | Error


@dataclass(frozen=True)
class ChangedFile:
    """A file under /mnt/data that an execution created or modified."""

    path: str  # absolute, inside the sandbox: /mnt/data/...
    bytes: int


@dataclass(frozen=True)
class Finished:
    """The terminal event of every execution stream."""

    status: Status
    execution_count: int | None
    files: list[ChangedFile]
    restarted: bool = False
    message: str | None = None
    deleted: list[str] = field(default_factory=list)  # paths under /mnt/data the execution removed
    type: Literal["finished"] = "finished"


Event = Output | Finished


@dataclass
class ExecutionResult:
    """Everything one execution produced, in order, plus how it ended."""

    outputs: list[Output]
    status: Status
    execution_count: int | None
    files: list[ChangedFile]
    restarted: bool = False
    message: str | None = None
    deleted: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def stdout(self) -> str:
        return "".join(o.text for o in self.outputs if isinstance(o, Stream) and o.name == "stdout")

    @property
    def stderr(self) -> str:
        return "".join(o.text for o in self.outputs if isinstance(o, Stream) and o.name == "stderr")

    @property
    def error(self) -> Error | None:
        return next((o for o in self.outputs if isinstance(o, Error)), None)

    @property
    def images(self) -> list[str]:
        """Base64 PNGs from displays and results, in order."""
        return [o.data["image/png"] for o in self.outputs
                if isinstance(o, Display | Result) and "image/png" in o.data]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
