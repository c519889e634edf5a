"""Domain errors: the one vocabulary of failure shared by every adapter.

Each class corresponds to one of containerd's errdefs conditions, so that the
wire adapters can map them both ways through a single table.
"""


class DomainError(Exception):
    """Base of every expected failure; never raised itself."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class NotFoundError(DomainError):
    """The named snapshot, parent, namespace or VM does not exist."""


class AlreadyExistsError(DomainError):
    """The key or name is taken; on Prepare this is also the remote-snapshot signal."""


class FailedPreconditionError(DomainError):
    """The object exists but is in the wrong state (has children, is committed, ...)."""


class InvalidArgumentError(DomainError):
    """The request itself is malformed (bad key, label, filter, field path, ...)."""


class ResourceExhaustedError(DomainError):
    """Out of a finite resource the caller cannot fix by retrying at once (the disk is full)."""


class UnavailableError(DomainError):
    """A backing system (VM, resolver, CVMFS layer) cannot be reached right now."""


class UnimplementedError(DomainError):
    """The operation is not supported by this implementation."""


class DeadlineExceededError(DomainError):
    """The operation did not complete within its time bound."""


class CancelledError(DomainError):
    """The caller went away."""


class InternalError(DomainError):
    """A bug or an unexpected condition on the far side."""


class UnknownError(DomainError):
    """A failure the far side did not classify."""
