"""The one exception tree of Cellbox, in domain words (no HTTP here; api/errors.py maps these)::

    CellboxError
    ├── InvalidInput         the caller asked for something malformed (bad size, bad path, bad name)
    ├── NotFound             no such container or file
    ├── Expired              the container exists but has expired
    ├── SandboxUnavailable   this host cannot provide the isolation we promise (with how to fix it)
    └── SandboxFailure       a container could not start or broke underneath us
"""


class CellboxError(Exception):
    """Base of every error Cellbox raises on purpose."""


class InvalidInput(CellboxError):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class NotFound(CellboxError):
    pass


class Expired(CellboxError):
    pass


class SandboxUnavailable(CellboxError):
    pass


class SandboxFailure(CellboxError):
    pass
