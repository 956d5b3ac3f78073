"""Network access for containers whose policy is an allowlist: the operator's permit list, the one egress proxy,
and a grant per container (its allowlist, its secrets behind placeholders, its allowance).

Secrets live only in this process's memory, in the container's grant, and go when the container goes (deleted,
expired, or the server stopped); the database keeps the allowlist and the fact that there were secrets. The code
sees each secret as a random placeholder in the environment variable named for it; the proxy swaps the
placeholder for the value only in HTTPS requests to that secret's domain.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
from pathlib import Path
from typing import Any

from cellbox.config import Settings
from cellbox.egress.authority import Authority
from cellbox.egress.policy import Pattern, Policy, index_host, parse_permit, parse_policy
from cellbox.egress.proxy import Grant, Proxy
from cellbox.errors import InvalidInput
from cellbox.sandbox.outside import Outside
from cellbox.schemas.containers import EgressUse, NetworkPolicy

PORT = 3128  # on the container's own 127.0.0.1: every container has its own
CA_PATH = "/etc/cellbox/egress-ca.pem"


def _variables(proxy: str) -> dict[str, str]:
    """What urllib, requests, httpx, pip and curl read (curl only the lower-case http_proxy)."""
    names = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
    trust = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "PIP_CERT", "NODE_EXTRA_CA_CERTS")
    return {**{n: proxy for n in names}, **{n.lower(): proxy for n in names}, **dict.fromkeys(trust, CA_PATH)}


class Egress:
    def __init__(self, settings: Settings) -> None:
        self._index_url = settings.pip_index_url.strip()
        self._index: Pattern | None = index_host(self._index_url) if self._index_url else None
        # The operator named the index, so tenants may name it too; it is also in every allowlist (``outside``).
        self.permit = parse_permit(settings.egress_permit) + ((self._index,) if self._index else ())
        self._settings = settings
        self._mappings = settings.egress_mappings
        self._max_bytes = settings.egress_max_bytes_value
        self._grants: dict[str, Grant] = {}
        self._authority: Authority | None = None
        self._proxy: Proxy | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.permit)

    async def start(self) -> None:
        if not self.enabled:
            return
        bundle = self._settings.egress_ca_bundle
        if bundle and not Path(bundle).is_file():
            raise InvalidInput(f"CELLBOX_EGRESS_CA_BUNDLE {bundle!r} is not a file")
        self._authority = await asyncio.to_thread(Authority.load_or_create, self._settings.data_dir / "egress")
        self._proxy = Proxy(self._authority, resolve=self._mappings, upstream_ca=Path(bundle) if bundle else None)

    async def aclose(self) -> None:
        if self._proxy is not None:
            await self._proxy.aclose()
        self._grants.clear()

    def policy(self, body: NetworkPolicy | None, param: str = "network_policy") -> Policy | None:
        """The checked policy of a create request; None for no network access (the default)."""
        if body is None or body.type == "disabled":
            if body is not None and (body.allowed_domains or body.domain_secrets):
                raise InvalidInput("a 'disabled' network policy takes no domains or secrets", param)
            return None
        pairs = [(s.domain, s.name, s.value) for s in body.domain_secrets or []]
        return parse_policy(body.allowed_domains or [], pairs, self.permit, param)

    def outside(self, cid: str, policy: Policy) -> Outside:
        """The grant for a new container, and what its sandbox needs to use it."""
        assert self._authority is not None
        placeholders = {f"cellbox-secret-{secrets.token_hex(16)}": s for s in policy.secrets}
        env = _variables(f"http://127.0.0.1:{PORT}")
        if self._index is not None:
            if self._index not in policy.allowed:
                policy = Policy((*policy.allowed, self._index), policy.secrets)
            env["PIP_INDEX_URL"] = self._index_url
            if self._index_url.startswith("http:"):
                env["PIP_TRUSTED_HOST"] = self._index.base  # pip otherwise ignores an index without TLS
        self._grants[cid] = Grant(cid, policy, placeholders, self._max_bytes, self._settings.egress_max_connections)
        env.update({s.name: p for p, s in placeholders.items()})
        return Outside(PORT, serve=lambda listener: self._serve(cid, listener), env=env,
                       files={CA_PATH: self._authority.cert_pem.decode()})

    async def _serve(self, cid: str, listener: socket.socket) -> None:
        """After each start of the container: the old listener (in a namespace now gone) makes way for the new."""
        assert self._proxy is not None
        grant = self._grants.get(cid)
        if grant is None:  # released while it started
            listener.close()
            return
        await self._proxy.stop(cid)
        await self._proxy.serve(listener, grant)

    async def release(self, cid: str) -> None:
        """The container is gone: its listener and connections close, its secrets are forgotten."""
        if self._grants.pop(cid, None) is not None and self._proxy is not None:
            await self._proxy.stop(cid)

    def use(self, cid: str) -> EgressUse | None:
        grant = self._grants.get(cid)
        if grant is None:
            return None
        return EgressUse(bytes=grant.bytes_used, max_bytes=grant.max_bytes, connections=grant.connections,
                         max_connections=grant.max_connections)

    def describe(self) -> dict[str, Any] | str:
        """For /health."""
        if not self.enabled:
            return "off (no CELLBOX_EGRESS_PERMIT: containers have no network access)"
        stats = self._proxy.stats() if self._proxy is not None else {}
        index = {"pip_index_url": self._index_url} if self._index_url else {}
        return {"permit": [str(p) for p in self.permit], **index, "containers": len(self._grants), **stats}
