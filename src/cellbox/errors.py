"""The one exception tree of Cellbox, in domain words (no HTTP here; api/errors.py maps these)::

    CellboxError
    ├── InvalidInput         the caller asked for something malformed (bad size, bad path, bad name)
    │   └── TooLarge         an upload over the size limit
    ├── Unauthenticated      no API key, or one we don't know
    ├── Forbidden            the request may not be served as it was addressed (a foreign Host in open mode)
    ├── RateLimited          too many requests for this key (or in flight for its project)
    ├── NotFound             no such container or file (or not this project's)
    │   └── SandboxClosed    the container was deleted or expired while the request was using it
    ├── Expired              the container exists but has expired
    ├── SandboxUnavailable   this host cannot provide the isolation we promise (with how to fix it), or the
    │                        node that runs the container cannot be asked now
    ├── SandboxFailure       a container could not start or broke underneath us
    ├── StoreUnavailable     the database or the file store is locked, down or unreachable (worth retrying)
    ├── UpstreamRejected     the model server refused the request (unknown model, context too long)
    └── UpstreamUnavailable  the model server is not configured, unreachable, too slow or failing

Any of them may say when a retry is worth it (``retry_after``, in seconds): RateLimited always does.
"""


class CellboxError(Exception):
    """Base of every error Cellbox raises on purpose; ``param`` names the request field at fault, if one is, and
    ``retry_after`` the seconds after which the same request may well succeed, if that is known."""

    def __init__(self, message: str, param: str | None = None, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.retry_after = retry_after


class InvalidInput(CellboxError):
    pass


class TooLarge(InvalidInput):
    pass


class Unauthenticated(CellboxError):
    pass


class Forbidden(CellboxError):
    pass


class RateLimited(CellboxError):
    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, retry_after=retry_after)


class NotFound(CellboxError):
    pass


class SandboxClosed(NotFound):
    pass


class Expired(CellboxError):
    pass


class SandboxUnavailable(CellboxError):
    pass


class SandboxFailure(CellboxError):
    pass


class StoreUnavailable(CellboxError):
    pass


class UpstreamRejected(CellboxError):
    pass


class UpstreamUnavailable(CellboxError):
    pass
