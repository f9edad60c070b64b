"""Status codes of the C ABI and the exception that carries them."""

from __future__ import annotations

import enum


class Status(enum.IntEnum):
    """``seginf_status``: 0 is success, each failure kind has its own negative code."""

    OK = 0
    ERR_NULL_ARGUMENT = -1
    ERR_INVALID_ARGUMENT = -2
    ERR_DIMENSION_MISMATCH = -3
    ERR_LABEL_OUT_OF_RANGE = -4
    ERR_BAD_SEGMENT = -5
    ERR_NON_FINITE = -6
    ERR_IMPOSSIBLE_LABELS = -7
    ERR_IO = -8
    ERR_FORMAT = -9
    ERR_MODEL_MISMATCH = -10
    ERR_UNSUPPORTED = -11
    ERR_CANCELLED = -12
    ERR_PANIC = -13
    ERR_NOT_CONVERGED = -14


class SeginfError(Exception):
    """A failed seginf call.

    Attributes:
        status: the numeric ``seginf_status`` (negative).
        name: its constant name, e.g. ``"SEGINF_ERR_BAD_SEGMENT"``.
        message: ``seginf_last_error_message()`` of the failed call, or the message of the
            argument check done in Python before calling the library (wrong shape, dtype,
            a closed handle, ...), which uses the status the library would use.
    """

    def __init__(self, status: int, name: str, message: str):
        super().__init__(f"{name} ({status}): {message}")
        self.status = int(status)
        self.name = name
        self.message = message


def python_error(status: Status, message: str) -> SeginfError:
    """An error found by an argument check in Python, named like the library names it."""
    return SeginfError(int(status), "SEGINF_" + status.name, message)


class LibraryError(OSError):
    """libseginf could not be found or loaded, or its version does not match this module."""
