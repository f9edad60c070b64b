"""Python progress callbacks as C function pointers.

A Python exception cannot cross the C frames, so the wrapper catches it, asks the library to
cancel (returns 1), and :meth:`Callback.reraise` raises it after the C call returned (in place
of the ``SEGINF_ERR_CANCELLED`` the call then reports). The owner keeps the ``Callback`` object
alive for as long as the library may call the function pointer.
"""

from __future__ import annotations


class Callback:
    def __init__(self, cfunctype, fn):
        self.fn = fn
        self.error: BaseException | None = None

        def trampoline(*args):
            try:
                return 1 if fn(*args[:-1]) else 0  # the last argument is the unused `user`
            except BaseException as e:  # noqa: BLE001 - re-raised by reraise()
                self.error = e
                return 1

        self.c_fn = cfunctype(trampoline)

    def reraise(self) -> None:
        """Raises (and forgets) the exception the callback raised, if any."""
        if self.error is not None:
            err, self.error = self.error, None
            raise err
