"""Turning caller arrays into the C-contiguous, aligned buffers the C ABI reads, without a copy
when they already are (``np.require`` returns its argument unchanged then), and checking the
shapes the library cannot see (it only gets a pointer and a length).

Every helper raises :class:`SeginfError` with the status the library uses for the same fault.
"""

from __future__ import annotations

import ctypes
import operator

import numpy as np

from ._errors import Status, python_error

_REQ = ["C_CONTIGUOUS", "ALIGNED"]


def ptr(arr: np.ndarray | None, ctype):
    """``arr``'s data as ``POINTER(ctype)`` (None for NULL). The caller keeps ``arr`` alive."""
    if arr is None:
        return None
    return arr.ctypes.data_as(ctypes.POINTER(ctype))


def _numeric(x, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu":
        raise python_error(
            Status.ERR_INVALID_ARGUMENT,
            f"{name} must hold real numbers, not dtype {arr.dtype}",
        )
    return arr


def floats(x, name: str, shape: tuple) -> np.ndarray:
    """``x`` as a float32 C-contiguous array of ``shape`` (None entries: any size).

    A C-contiguous float32 array is returned as is; other real dtypes are converted (a copy).
    """
    arr = _numeric(x, name)
    if arr.ndim != len(shape) or any(want is not None and got != want for got, want in zip(arr.shape, shape)):
        want = (
            "("
            + ", ".join("n" if w is None else str(w) for w in shape)
            + ("," if len(shape) == 1 else "")
            + ")"
        )
        raise python_error(Status.ERR_DIMENSION_MISMATCH, f"{name} has shape {arr.shape}, expected {want}")
    return np.require(arr, np.float32, _REQ)


def features(x, dim: int, name: str = "features") -> np.ndarray:
    """An (n, dim) float32 feature matrix (n >= 1 is checked by the library)."""
    return floats(x, name, (None, dim))


def labels(y, n: int | None, name: str = "labels") -> np.ndarray:
    """A uint32 label vector of length ``n`` (any length when None).

    Integer arrays are accepted (converted when not uint32); negative labels and labels above
    2**32 - 1 raise LABEL_OUT_OF_RANGE here (labels >= C are the library's check).
    """
    arr = np.asarray(y)
    if arr.dtype.kind not in "iu":
        raise python_error(
            Status.ERR_INVALID_ARGUMENT, f"{name} must be an integer array, not dtype {arr.dtype}"
        )
    if arr.ndim != 1 or (n is not None and arr.shape[0] != n):
        want = f"({n},)" if n is not None else "(n,)"
        raise python_error(Status.ERR_DIMENSION_MISMATCH, f"{name} has shape {arr.shape}, expected {want}")
    if arr.dtype != np.uint32 and arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 0xFFFFFFFF:
            bad = lo if lo < 0 else hi
            raise python_error(Status.ERR_LABEL_OUT_OF_RANGE, f"{name} contains {bad}, not a label")
    return np.require(arr, np.uint32, _REQ)


def integers(x, dtype, name: str, n: int | None = None) -> np.ndarray:
    """A 1-D array of non-negative integers (doc ids, lengths, positions) as ``dtype``."""
    arr = np.asarray(x)
    if arr.size == 0 and arr.dtype.kind == "f":
        arr = arr.astype(dtype)  # np.asarray([]) is float64
    if arr.dtype.kind not in "iu":
        raise python_error(Status.ERR_INVALID_ARGUMENT, f"{name} must be integers, not dtype {arr.dtype}")
    if arr.ndim != 1 or (n is not None and arr.shape[0] != n):
        want = f"({n},)" if n is not None else "(n,)"
        raise python_error(Status.ERR_DIMENSION_MISMATCH, f"{name} has shape {arr.shape}, expected {want}")
    if arr.size and arr.dtype.kind == "i" and int(arr.min()) < 0:
        raise python_error(Status.ERR_INVALID_ARGUMENT, f"{name} contains {int(arr.min())} < 0")
    return np.require(arr, dtype, _REQ)


def index(value, name: str, status: Status = Status.ERR_INVALID_ARGUMENT) -> int:
    """A non-negative Python int (``status`` for a negative one)."""
    try:
        if isinstance(value, bool):
            raise TypeError
        i = operator.index(value)
    except TypeError:
        raise python_error(
            Status.ERR_INVALID_ARGUMENT, f"{name} must be an int, not {type(value).__name__}"
        ) from None
    if i < 0:
        raise python_error(status, f"{name} = {i} is negative")
    return i


def out_array(out, shape: tuple, dtype, name: str = "out") -> np.ndarray:
    """A new array, or the caller's ``out`` when it is C-contiguous, aligned, writeable and of
    exactly ``dtype`` and ``shape`` (the library writes into it in place)."""
    if out is None:
        return np.empty(shape, dtype=dtype)
    if not isinstance(out, np.ndarray) or out.dtype != np.dtype(dtype):
        raise python_error(
            Status.ERR_INVALID_ARGUMENT, f"{name} must be a numpy array of dtype {np.dtype(dtype)}"
        )
    if out.shape != tuple(shape):
        raise python_error(
            Status.ERR_DIMENSION_MISMATCH, f"{name} has shape {out.shape}, expected {tuple(shape)}"
        )
    if not (out.flags.c_contiguous and out.flags.aligned and out.flags.writeable):
        raise python_error(Status.ERR_INVALID_ARGUMENT, f"{name} must be C-contiguous, aligned and writeable")
    return out


def path_bytes(path) -> bytes:
    """A filesystem path as the bytes the C ABI takes (it requires UTF-8)."""
    import os

    p = os.fspath(path)
    return p.encode("utf-8") if isinstance(p, str) else p


def c_strings(names, name: str = "label_names"):
    """A C array of NUL-terminated UTF-8 strings (and the list keeping the bytes alive)."""
    if isinstance(names, (str, bytes)):
        raise python_error(
            Status.ERR_INVALID_ARGUMENT, f"{name} must be a sequence of strings, not one string"
        )
    encoded = [s.encode("utf-8") if isinstance(s, str) else bytes(s) for s in names]
    if not encoded:
        raise python_error(Status.ERR_INVALID_ARGUMENT, f"{name} is empty")
    arr = (ctypes.c_char_p * len(encoded))(*encoded)
    return arr, encoded
