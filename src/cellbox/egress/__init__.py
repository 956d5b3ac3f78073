"""Controlled egress: a container's allowlist, the proxy that enforces it, and the secrets it injects."""
