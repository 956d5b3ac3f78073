"""Containers, container files and the execute extension."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from cellbox.schemas.common import Request, Wire

MemoryLimit = Literal["1g", "4g", "16g", "64g"]
ExecutionStatus = Literal["completed", "failed", "timeout", "out_of_memory", "crashed"]


class ExpiresAfter(Request):
    anchor: Literal["last_active_at"]
    minutes: Annotated[int, Field(ge=1, le=60 * 24 * 30)]


class DomainSecret(Request):
    domain: Annotated[str, Field(min_length=1, max_length=300)]
    name: Annotated[str, Field(min_length=1, max_length=300)]
    value: Annotated[str, Field(min_length=1, max_length=10485760, repr=False)]


class NetworkPolicy(Request):
    """``disabled``, or ``allowlist`` with ``allowed_domains`` (and secrets injected for some of them)."""

    type: Literal["disabled", "allowlist"]
    allowed_domains: Annotated[list[Annotated[str, Field(max_length=300)]], Field(max_length=1000)] | None = None
    domain_secrets: Annotated[list[DomainSecret], Field(max_length=1000)] | None = None


class CreateContainer(Request):
    name: Annotated[str, Field(min_length=1, max_length=256)]
    file_ids: Annotated[list[str], Field(default_factory=list, max_length=100)]
    expires_after: ExpiresAfter | None = None
    memory_limit: MemoryLimit | None = None
    network_policy: NetworkPolicy | None = None
    skills: list[Any] | None = None


class CreateContainerFileById(Request):
    file_id: Annotated[str, Field(min_length=1)]


class ExpiresAfterOut(Wire):
    anchor: Literal["last_active_at"] = "last_active_at"
    minutes: int


class NetworkPolicyOut(Wire):
    omit_when_none = frozenset({"allowed_domains"})
    type: Literal["disabled", "allowlist"] = "disabled"
    allowed_domains: list[str] | None = None  # never the secrets


class EgressUse(Wire):
    """Cellbox's extension on a container with network access: what it has used of its allowance."""

    bytes: int
    max_bytes: int
    connections: int
    max_connections: int


class Container(Wire):
    omit_when_none = frozenset({"egress"})
    id: str
    object: Literal["container"] = "container"
    name: str
    created_at: int
    status: str
    last_active_at: int
    expires_after: ExpiresAfterOut
    memory_limit: MemoryLimit
    network_policy: NetworkPolicyOut = NetworkPolicyOut()
    egress: EgressUse | None = None


class ContainerFile(Wire):
    id: str
    object: Literal["container.file"] = "container.file"
    container_id: str
    created_at: int
    bytes: int
    path: str
    source: Literal["user", "assistant"]


class ExecuteRequest(Request):
    """Cellbox's extension: run code in a container without a model."""

    code: str
    timeout: Annotated[float, Field(gt=0, le=3600)] | None = None
    stream: bool = False
    figures: bool = False  # keep each displayed PNG as a container file too, as the Responses tool does


class LogsOutput(Wire):
    type: Literal["logs"] = "logs"
    logs: str


class ImageOutput(Wire):
    type: Literal["image"] = "image"
    url: str


class Execution(Wire):
    """The result of ``POST /v1/containers/{id}/execute``: outputs in the Responses API's item shapes."""

    id: str
    object: Literal["container.execution"] = "container.execution"
    container_id: str
    status: ExecutionStatus
    outputs: list[LogsOutput | ImageOutput]
    files: list[ContainerFile]
    restarted: bool = False
    message: str | None = None
