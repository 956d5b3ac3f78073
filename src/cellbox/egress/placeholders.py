"""Secret substitution: the placeholder a container sees becomes the real value on its way to a host the
secret's domain covers, in request header values only, and nowhere else."""

from __future__ import annotations

import re
from collections.abc import Mapping

from cellbox.egress.policy import Policy, Secret


class Substitution:
    """The placeholders to replace on requests to one host (the others pass unchanged)."""

    def __init__(self, policy: Policy, placeholders: Mapping[str, Secret], host: str) -> None:
        covered = set(policy.secrets_for(host))
        self._values = {p.encode(): s.value.encode() for p, s in placeholders.items() if p and s in covered}
        # Longest first, one pass: a placeholder inside another is never half-replaced, and a replaced value is
        # never searched again.
        longest_first = sorted(self._values, key=len, reverse=True)
        self._pattern = re.compile(b"|".join(map(re.escape, longest_first))) if longest_first else None

    def apply(self, value: bytes) -> bytes:
        if self._pattern is None:
            return value
        return self._pattern.sub(lambda match: self._values[match.group()], value)
