"""Every knob Cellbox has, with its default and help, read once from CELLBOX_* variables and passed down."""

from __future__ import annotations

import ipaddress
import re
import sys
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cellbox.errors import InvalidInput

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}

DEFAULT_PRELOAD = ["numpy", "pandas", "matplotlib", "matplotlib.pyplot", "PIL.Image"]


def parse_size(text: str | int, what: str = "size") -> int:
    """'1g' -> 1073741824; plain integers are bytes."""
    if isinstance(text, int):
        return text
    match = _SIZE.match(text)
    if not match:
        raise InvalidInput(f"invalid {what} {text!r}: use a number with an optional k/m/g/t suffix, e.g. '1g'")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CELLBOX_", extra="ignore")

    data_dir: Path = Field(Path.home() / ".local/share/cellbox", description="Where workspaces and state live.")
    host: str = Field("127.0.0.1", description="Address `cellbox serve` binds to.")
    port: int = Field(8000, ge=0, le=65535, description="Port `cellbox serve` binds to.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="`cellbox serve` logging: info has one access-log line per request; never bodies or keys."
    )
    database_url: str = Field("", description="SQLAlchemy URL; empty means SQLite in the data directory. "
                              "PostgreSQL: postgresql+psycopg://user:pass@host/db")
    blob_url: str = Field("", description="Where Files API bytes live: empty means a directory in the data "
                          "directory; 's3://bucket/prefix' an S3-compatible store (credentials from boto3's usual "
                          "chain: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, an instance role).")
    s3_endpoint_url: str = Field("", description="The S3-compatible store's URL, e.g. 'http://minio:9000' (requests "
                                 "are then path-style); empty means AWS S3.")
    s3_region: str = Field("", description="The bucket's region; empty means boto3's own (AWS_REGION, the "
                           "profile's, else us-east-1).")
    api_keys: str = Field("", description="Keys seeded at start: 'key1=projectA,key2=projectB'.")
    rate_limit: int = Field(0, ge=0, description="Requests per minute per API key; 0 turns the limit off.")
    max_upload: str = Field("512m", description="Largest accepted upload.")
    container_expiry_minutes: int = Field(20, ge=1, description="Default idle minutes before a container expires.")
    reaper_interval: float = Field(30.0, gt=0, description="Seconds between checks for expired containers.")
    memory_limit: str = Field("1g", description="Default memory limit per container (1g, 4g, 16g, 64g).")
    timeout: float = Field(60.0, gt=0, description="Default per-execution timeout in seconds.")
    warm_pool: int = Field(2, ge=0, le=64, description="Containers kept started ahead of demand (0: none).")
    interrupt_grace: float = Field(3.0, gt=0, description="Seconds an interrupted execution gets to stop.")
    output_limit: int = Field(1 << 20, gt=0, description="Bytes of stdout+stderr kept per execution.")
    disk_quota: str = Field("2g", description="Workspace size limit per container.")
    pids_limit: int = Field(256, gt=8, description="Processes and threads per container.")
    cpus: float = Field(1.0, gt=0, description="CPU cores' worth of time per container.")
    open_files: int = Field(1024, gt=16, description="Open-files limit inside containers.")
    tmp_size: str = Field("512m", description="Size of each container's private /tmp (counts as memory).")
    sandbox_uid: int = Field(100000, gt=0, description="First host uid of the range containers run as, one "
                             "uid per live container (no host user may use the range).")
    sandbox_gid: int = Field(100000, gt=0, description="First host gid of the range, one gid per live container.")
    sandbox_id_count: int = Field(65536, ge=2, description="How many uids and gids the range holds: the most "
                                  "containers alive at once, warm ones included (at least the warm pool plus 2).")
    sandbox_cgroups: Literal["on", "off"] = Field(
        "on", description="'off' runs containers without memory/pids/cpu limits: weaker, reported as such."
    )
    sandbox_disk_quota: Literal["on", "off"] = Field(
        "on", description="'off' gives workspaces no size limit (no filesystem of their own): weaker."
    )
    sandbox_python: Path = Field(Path(sys.executable), description="Python that runs inside containers.")
    upstream_base_url: str = Field("", description="OpenAI-style base URL of the model server, ending in /v1 "
                                   "(vLLM, Ollama, llama.cpp, SGLang, OpenAI). Empty: /v1/responses is off.")
    upstream_api_key: str = Field("", description="Bearer key sent to the upstream model server (empty: none).")
    model_aliases: str = Field("", description="Rename requested models for the upstream: "
                               "'gpt-4.1=qwen3:8b,*=llama3.1' ('*' catches every other name).")
    upstream_timeout: float = Field(300.0, gt=0, description="Seconds to wait for the upstream's next bytes.")
    max_tool_calls: int = Field(20, ge=1, le=1000, description="Most code runs one response may make.")
    background_limit: int = Field(8, ge=1, le=1000, description="Background responses a project may run at once "
                                  "(beyond: a 429).")
    upstream_vision: Literal["auto", "on", "off"] = Field(
        "auto", description="Show the model the images its code displayed (on a user message after the run): "
        "'auto' when the conversation's input has an image (the model is evidently a vision model).")
    egress_permit: str = Field("", description="Domains tenants may put in a network_policy allowlist (patterns "
                               "'name', '*.name', '.name', or '*'; comma-separated). Empty: allowlists are refused.")
    egress_resolve: str = Field("", description="Names the egress proxy maps to addresses as given, trusted even "
                                "when private: 'pypi.test=127.0.0.1:8443,api.test=[::1]:9443' (tests, air-gapped "
                                "mirrors).")
    egress_ca_bundle: str = Field("", description="PEM file of extra roots the egress proxy trusts for the servers "
                                  "it connects to (a corporate root, a test CA), besides the system's.")
    egress_max_bytes: str = Field("1g", description="Bytes one container may move through the egress proxy, both "
                                  "directions, over its life.")
    egress_max_connections: int = Field(16, ge=1, le=1024, description="Connections through the egress proxy one "
                                        "container may have open at once.")
    pip_index_url: str = Field("", description="The package index every container's pip uses (an internal index "
                               "or mirror, e.g. 'https://pypi.internal/simple'); its host is then allowed in every "
                               "allowlist. Default port only: map another address or port with "
                               "CELLBOX_EGRESS_RESOLVE.")
    role: Literal["all", "api", "node"] = Field(
        "all", description="What this server does: 'all' answers the API and runs containers (one machine); 'api' "
        "answers the API and sends every container's work to a node (no engine: needs PostgreSQL, "
        "CELLBOX_BLOB_URL and CELLBOX_NODE_TOKEN); 'node' runs containers for the API servers only (it answers "
        "requests that carry the node token, besides /health and /metrics).")
    node_token: str = Field("", description="The secret every server of a cluster shares: requests between them "
                            "carry it, and a node answers a server's request for a project only with it. At "
                            "least 32 printable ASCII characters; required by the api and node roles.")
    node_url: str = Field("", description="The address other servers reach this node at (shown in `cellbox node "
                          "ls`, used to relay requests to it). Empty: http://HOST:PORT as served.")
    heartbeat_interval: float = Field(5.0, gt=0, description="Seconds between a node's reports of its load "
                                      "(its heartbeat) in the shared database.")
    node_timeout: float = Field(30.0, gt=0, description="Seconds without a heartbeat after which a node is lost: "
                                "it is marked down and its containers expire. At least three heartbeats.")
    preload: list[str] = Field(default_factory=lambda: list(DEFAULT_PRELOAD),
                               description="Modules imported once in the warm template.")

    @model_validator(mode="after")
    def _room_beyond_the_warm_pool(self) -> Settings:
        if self.sandbox_id_count < self.warm_pool + 2:
            raise ValueError(f"sandbox_id_count ({self.sandbox_id_count}) must be at least the warm pool "
                             f"({self.warm_pool}) plus 2, or no container could be handed out while the pool refills")
        if self.node_timeout < 3 * self.heartbeat_interval:
            raise ValueError(f"node_timeout ({self.node_timeout}) must be at least three heartbeat intervals "
                             f"({3 * self.heartbeat_interval}), or a node that is merely slow would be lost")
        if self.node_token and (len(self.node_token) < 32 or not self.node_token.isascii()
                                or not self.node_token.isprintable() or " " in self.node_token):
            raise ValueError("node_token must be at least 32 printable ASCII characters, no spaces (e.g. `openssl "
                             "rand -hex 32`)")
        if self.role != "all" and not self.node_token:
            raise ValueError(f"the {self.role} role needs CELLBOX_NODE_TOKEN, the secret the servers of a cluster "
                             "share (e.g. `openssl rand -hex 32`)")
        if self.role == "api" and not (self.database_url.startswith("postgresql") and self.blob_url):
            raise ValueError("the api role keeps nothing of its own: it needs a PostgreSQL CELLBOX_DATABASE_URL and "
                             "an object store in CELLBOX_BLOB_URL, shared with the nodes")
        return self

    @property
    def runs_containers(self) -> bool:
        """Whether this server has an engine: every role but api."""
        return self.role != "api"

    @property
    def loopback_only(self) -> bool:
        """Whether `cellbox serve` binds a loopback address only: the one case where open mode (no keys) may be."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    @property
    def aliases(self) -> dict[str, str]:
        """'a=b,*=c' as a mapping; a malformed entry is a configuration error, reported at start."""
        pairs = [entry.strip() for entry in self.model_aliases.split(",") if entry.strip()]
        if any(entry.count("=") != 1 or not all(part.strip() for part in entry.split("=")) for entry in pairs):
            raise InvalidInput(f"invalid CELLBOX_MODEL_ALIASES {self.model_aliases!r}: use 'requested=upstream,...'")
        return {k.strip(): v.strip() for k, v in (entry.split("=") for entry in pairs)}

    @property
    def egress_mappings(self) -> dict[str, tuple[str, int]]:
        """'name=ip:port,...' as a mapping (names lower-cased); malformed entries are reported at start."""
        mappings: dict[str, tuple[str, int]] = {}
        for entry in (e.strip() for e in self.egress_resolve.split(",")):
            if not entry:
                continue
            name, _, target = entry.partition("=")
            address, _, port = target.strip().rpartition(":")
            if not name.strip() or not address or not port.isdigit() or not 0 < int(port) < 65536:
                raise InvalidInput(f"invalid CELLBOX_EGRESS_RESOLVE entry {entry!r}: use 'name=ip:port'")
            mappings[name.strip().rstrip(".").lower()] = (address.strip("[]"), int(port))
        return mappings

    @property
    def egress_max_bytes_value(self) -> int:
        return parse_size(self.egress_max_bytes, "egress byte limit")

    @property
    def memory_bytes(self) -> int:
        return parse_size(self.memory_limit, "memory limit")

    @property
    def disk_quota_bytes(self) -> int:
        return parse_size(self.disk_quota, "disk quota")

    @property
    def max_upload_bytes(self) -> int:
        return parse_size(self.max_upload, "upload limit")

    @property
    def advertised_url(self) -> str:
        return self.node_url.rstrip("/") or f"http://{self.host}:{self.port}"

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir.resolve() / 'cellbox.db'}"

    @property
    def tmp_bytes(self) -> int:
        return parse_size(self.tmp_size, "tmp size")
