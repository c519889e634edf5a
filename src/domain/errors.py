"""Domain errors: the one vocabulary of failure shared by every adapter.

Each class declares its protocol meaning once, as `code`: one of the canonical
status codes that containerd's errdefs, gRPC and ttrpc share. Every wire (the
gRPC table both ways, ttrpc, the resolver's HTTP statuses, the metrics `code`
label) derives its mapping from it, so a new error class is one line here.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import ClassVar


class Code(enum.IntEnum):
    """The canonical status codes (google.rpc.Code), by name and number as gRPC and ttrpc carry them."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


_BY_CODE: dict[int, type[DomainError]] = {}


class DomainError(Exception):
    """Base of every expected failure; never raised itself (on the wire it would be UNKNOWN)."""

    code: ClassVar[Code] = Code.UNKNOWN

    def __init_subclass__(cls, **kwargs: object) -> None:
        """The first class declaring a code is the one a wire status of that code becomes."""
        super().__init_subclass__(**kwargs)
        if "code" in cls.__dict__:
            _BY_CODE.setdefault(cls.code, cls)

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class NotFoundError(DomainError):
    """The named snapshot, parent, namespace or VM does not exist."""

    code = Code.NOT_FOUND


class AlreadyExistsError(DomainError):
    """The key or name is taken; on Prepare this is also the remote-snapshot signal."""

    code = Code.ALREADY_EXISTS


class FailedPreconditionError(DomainError):
    """The object exists but is in the wrong state (has children, is committed, ...)."""

    code = Code.FAILED_PRECONDITION


class InvalidArgumentError(DomainError):
    """The request itself is malformed (bad key, label, filter, field path, ...)."""

    code = Code.INVALID_ARGUMENT


class ResourceExhaustedError(DomainError):
    """Out of a finite resource the caller cannot fix by retrying at once (the disk is full)."""

    code = Code.RESOURCE_EXHAUSTED  # containerd/errdefs ErrResourceExhausted


class UnavailableError(DomainError):
    """A backing system (VM, resolver, CVMFS layer) cannot be reached right now."""

    code = Code.UNAVAILABLE


class UnimplementedError(DomainError):
    """The operation is not supported by this implementation."""

    code = Code.UNIMPLEMENTED


class DeadlineExceededError(DomainError):
    """The operation did not complete within its time bound."""

    code = Code.DEADLINE_EXCEEDED


class CancelledError(DomainError):
    """The caller went away."""

    code = Code.CANCELLED


class InternalError(DomainError):
    """A bug or an unexpected condition on the far side."""

    code = Code.INTERNAL


class UnknownError(DomainError):
    """A failure the far side did not classify."""

    code = Code.UNKNOWN


BY_CODE: Mapping[int, type[DomainError]] = MappingProxyType(_BY_CODE)
"""Each declared code's error class: what a wire status of that code becomes."""


def error_for(code: int) -> type[DomainError]:
    """The error class a wire status code becomes; a code no class declares is `UnknownError`."""
    return _BY_CODE.get(code, UnknownError)
