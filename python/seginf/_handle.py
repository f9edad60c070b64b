"""The base class of every wrapper of a C handle: one owner, one ``_free``, ``close()``
idempotent, context manager, and a ``__del__`` that frees what ``close()`` was not called on."""

from __future__ import annotations

import ctypes

from . import _lib
from ._errors import Status, python_error


class Handle:
    """Owns one C handle. ``close()`` frees it (a second ``close()`` does nothing); using the
    object afterwards raises :class:`SeginfError` (``SEGINF_ERR_NULL_ARGUMENT``). Objects made
    from it (an index from a CRF, a query from an index) hold their own C reference, so closing
    this one does not invalidate them.

    Do not close a handle while another thread is using it.
    """

    _free_fn: str = ""  # name of the C _free function
    _ptr: ctypes.c_void_p | None = None  # class default: __del__ is safe if __init__ failed

    def __init__(self, ptr: ctypes.c_void_p):
        if not ptr:
            raise ValueError("a NULL handle")  # the library wrote no handle: a bug here
        self._ptr = ptr

    @property
    def closed(self) -> bool:
        """True once ``close()`` has been called (or the handle was consumed)."""
        return self._ptr is None

    def _handle(self) -> ctypes.c_void_p:
        """The C pointer, or SeginfError when closed."""
        if self._ptr is None:
            raise python_error(Status.ERR_NULL_ARGUMENT, f"this {type(self).__name__} is closed")
        return self._ptr

    def _release(self) -> ctypes.c_void_p | None:
        """Gives up ownership without freeing (the handle was consumed by a C call)."""
        ptr, self._ptr = self._ptr, None
        return ptr

    def close(self) -> None:
        """Frees the C handle now. Safe to call more than once."""
        ptr = self._release()
        if ptr is not None:
            getattr(_lib.get(), self._free_fn)(ptr)

    def __enter__(self):
        self._handle()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001, S110 - at interpreter shutdown the library or globals may be gone
            pass

    def __repr__(self) -> str:
        state = "closed" if self._ptr is None else f"at 0x{self._ptr.value:x}"
        return f"<seginf.{type(self).__name__} {state}>"


def new_handle(fn, *args) -> ctypes.c_void_p:
    """Calls a constructor-like C function whose last argument is the handle out-pointer."""
    out = ctypes.c_void_p()
    _lib.check(fn(*args, ctypes.byref(out)))
    return out
