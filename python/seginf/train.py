"""``Trainer`` (full-batch L-BFGS on fixed features, partial labels), ``Curvature`` (fitted
K-FAC / EK-FAC / exact inverse Hessians) and ``exact_influence`` (retraining ground truth)."""

from __future__ import annotations

import ctypes

import numpy as np

from . import _arrays as A
from . import _lib
from ._callback import Callback
from ._enums import Hessian, enum_value
from ._errors import Status, python_error
from ._handle import Handle, new_handle
from .crf import Crf


class Trainer(Handle):
    """Trains a CRF of the shape of ``init`` (a warm start; its ``-inf`` entries are
    constraints that stay ``-inf``) on a copy of the sequences added, minimising
    ``mean NLL + (l2/2) |theta|^2`` with full-batch L-BFGS.

    ``l2`` (default 1e-4), ``tolerance`` (largest absolute gradient entry at convergence,
    default 1e-6) and ``max_iterations`` (default 1000) are the library's defaults when None.
    The methods that change the trainer need it to themselves.
    """

    _free_fn = "seginf_trainer_free"

    def __init__(
        self,
        init: Crf,
        *,
        l2: float | None = None,
        tolerance: float | None = None,
        max_iterations: int | None = None,
    ):
        super().__init__(new_handle(_lib.get().seginf_trainer_new, init._handle()))
        self._dims = (init.feature_dim, init.num_labels)
        #: ``(objective, max_abs_gradient, iterations)`` of the last successful :meth:`run`.
        self.last_run: tuple[float, float, int] | None = None
        if l2 is not None:
            self.set_l2(l2)
        if tolerance is not None:
            self.set_tolerance(tolerance)
        if max_iterations is not None:
            self.set_max_iterations(max_iterations)

    def add(self, features, labels, observed=None) -> None:
        """Adds one training sequence (copied): features (n, d), labels (n,), and an optional
        (n,) mask ``observed`` (True = token labelled; False = unlabelled, its label ignored and
        marginalised out: partial-label training). None = every token labelled."""
        d, _ = self._dims
        x = A.features(features, d)
        n = x.shape[0]
        if observed is None:
            y = A.labels(labels, n)
            mask = None
        else:
            mask = np.asarray(observed)
            if mask.dtype.kind not in "biu":
                raise python_error(
                    Status.ERR_INVALID_ARGUMENT,
                    f"observed must be a bool or integer array, not dtype {mask.dtype}",
                )
            if mask.shape != (n,):
                raise python_error(
                    Status.ERR_DIMENSION_MISMATCH, f"observed has shape {mask.shape}, expected ({n},)"
                )
            mask = np.ascontiguousarray(mask != 0, dtype=np.uint8)
            # Unlabelled tokens accept any label value; keep them from failing the range check.
            y = np.asarray(labels)
            if y.dtype.kind in "iu" and y.shape == (n,) and y.dtype != np.uint32:
                y = np.where(mask.astype(bool), y, 0)
            y = A.labels(y, n)
        _lib.check(
            _lib.get().seginf_trainer_add(
                self._handle(),
                A.ptr(x, ctypes.c_float),
                n,
                A.ptr(y, ctypes.c_uint32),
                A.ptr(mask, ctypes.c_uint8),
            )
        )

    @property
    def num_sequences(self) -> int:
        """Training sequences added so far."""
        return _lib.get().seginf_trainer_num_sequences(self._handle())

    def set_l2(self, l2: float) -> None:
        """lambda of ``mean NLL + (l2/2)|theta|^2`` (finite, >= 0)."""
        _lib.check(_lib.get().seginf_trainer_set_l2(self._handle(), float(l2)))

    def set_tolerance(self, tolerance: float) -> None:
        """Convergence tolerance on the largest absolute gradient entry (finite, > 0)."""
        _lib.check(_lib.get().seginf_trainer_set_tolerance(self._handle(), float(tolerance)))

    def set_max_iterations(self, max_iterations: int) -> None:
        """Most L-BFGS steps per run; reaching it unconverged raises ``SEGINF_ERR_NOT_CONVERGED``."""
        _lib.check(
            _lib.get().seginf_trainer_set_max_iterations(
                self._handle(), A.index(max_iterations, "max_iterations")
            )
        )

    def set_init(self, crf: Crf) -> None:
        """Starts later runs from ``crf`` (same shape; its ``-inf`` entries become the constraints)."""
        _lib.check(_lib.get().seginf_trainer_set_init(self._handle(), crf._handle()))

    def run(self, progress=None) -> Crf:
        """Trains and returns the new CRF; ``last_run`` then holds ``(objective,
        max_abs_gradient, iterations)``. ``progress(iteration, objective, max_abs_gradient)``
        is called after every L-BFGS step; a true return cancels (``SEGINF_ERR_CANCELLED``),
        an exception it raises is re-raised here. Deterministic on any number of threads."""
        lib, h = _lib.get(), self._handle()
        out = ctypes.c_void_p()
        obj, grad, iters = ctypes.c_double(), ctypes.c_double(), ctypes.c_size_t()
        self._reporting(
            progress,
            lambda: lib.seginf_trainer_run(
                h, ctypes.byref(out), ctypes.byref(obj), ctypes.byref(grad), ctypes.byref(iters)
            ),
        )
        self.last_run = (obj.value, grad.value, iters.value)
        return Crf._from_ptr(out)

    def _reporting(self, progress, call) -> None:
        """Runs ``call()`` (a C call returning a status) with ``progress`` as the trainer's
        progress callback for its duration; re-raises what the callback raised, then checks
        the status."""
        lib, h = _lib.get(), self._handle()
        cb = Callback(_lib.TRAIN_PROGRESS_FN, progress) if progress is not None else None
        if cb is not None:
            _lib.check(lib.seginf_trainer_set_progress(h, cb.c_fn, None))
        try:
            status = call()
        finally:
            if cb is not None:
                lib.seginf_trainer_set_progress(h, _lib.TRAIN_PROGRESS_FN(), None)
        if cb is not None:
            cb.reraise()
        _lib.check(status)


class Curvature(Handle):
    """A fitted inverse Hessian ``(H + (l2 + damping) I)^-1`` of a trainer's objective at a
    trained CRF, for :meth:`Query.set_curvature` and :func:`exact_influence`. Immutable."""

    _free_fn = "seginf_curvature_free"

    def __init__(self, *args, **kwargs):
        raise TypeError("make a Curvature with Curvature.fit(...) or Curvature.open(path, crf)")

    @classmethod
    def _from_ptr(cls, ptr) -> Curvature:
        obj = cls.__new__(cls)
        Handle.__init__(obj, ptr)
        return obj

    @classmethod
    def fit(cls, trainer: Trainer, trained: Crf, mode="kfac", damping: float = 0.0) -> Curvature:
        """Fits ``mode`` ("kfac", "ekfac" or "exact"; see :class:`Hessian`) at ``trained``
        (normally ``trainer.run()``) with ``damping`` (>= 0; l2 + damping > 0). Exact keeps
        the training data and solves by conjugate gradient at each use."""
        ptr = new_handle(
            _lib.get().seginf_curvature_fit,
            trainer._handle(),
            trained._handle(),
            enum_value(Hessian, mode),
            float(damping),
        )
        return cls._from_ptr(ptr)

    @classmethod
    def open(cls, path, crf: Crf) -> Curvature:
        """Opens a K-FAC / EK-FAC curvature saved by :meth:`save`, for the CRF it was fitted at."""
        return cls._from_ptr(new_handle(_lib.get().seginf_curvature_open, A.path_bytes(path), crf._handle()))

    def save(self, path) -> None:
        """Saves a K-FAC or EK-FAC curvature (exact ones hold no statistics: UNSUPPORTED)."""
        _lib.check(_lib.get().seginf_curvature_save(self._handle(), A.path_bytes(path)))

    @property
    def mode(self) -> Hessian:
        """The Hessian mode it was fitted for."""
        return Hessian(_lib.get().seginf_curvature_mode(self._handle()))

    def last_solve(self) -> tuple[int, float]:
        """For an exact curvature: ``(iterations, relative_residual)`` of its latest CG solve."""
        iters, resid = ctypes.c_size_t(), ctypes.c_double()
        _lib.check(
            _lib.get().seginf_curvature_last_solve(self._handle(), ctypes.byref(iters), ctypes.byref(resid))
        )
        return iters.value, resid.value


def exact_influence(
    trainer: Trainer,
    trained: Crf,
    train_sequence: int,
    train_first: int,
    train_last: int,
    test_features,
    test_labels,
    test_first: int,
    test_last: int,
    curvature: Curvature | None = None,
    progress=None,
) -> tuple[float, float]:
    """Influence by retraining (paper Eq. 5-6): unlabels tokens ``train_first..train_last`` of
    training sequence ``train_sequence`` (0-based, in the order added), retrains warm-started
    from ``trained``, and returns ``(actual, predicted)``: the change of the test segment's
    conditional loss, and the influence-function prediction ``(1/S) g_test . (H + (l2 +
    damping) I)^-1 g_train`` (``curvature`` None = identity, damping 1). A query token's score
    with the same curvature is ``-S * predicted``. ``progress`` sees the retraining's L-BFGS
    steps as in :meth:`Trainer.run` (a true return cancels)."""
    d = trained.feature_dim
    x = A.features(test_features, d, "test_features")
    y = A.labels(test_labels, x.shape[0], "test_labels")
    idx = [
        A.index(v, name, Status.ERR_BAD_SEGMENT if name != "train_sequence" else Status.ERR_INVALID_ARGUMENT)
        for v, name in (
            (train_sequence, "train_sequence"),
            (train_first, "train_first"),
            (train_last, "train_last"),
            (test_first, "test_first"),
            (test_last, "test_last"),
        )
    ]
    actual, predicted = ctypes.c_double(), ctypes.c_double()
    trainer._reporting(
        progress,
        lambda: _lib.get().seginf_exact_influence(
            trainer._handle(),
            trained._handle(),
            None if curvature is None else curvature._handle(),
            idx[0],
            idx[1],
            idx[2],
            A.ptr(x, ctypes.c_float),
            x.shape[0],
            A.ptr(y, ctypes.c_uint32),
            idx[3],
            idx[4],
            ctypes.byref(actual),
            ctypes.byref(predicted),
        ),
    )
    return actual.value, predicted.value
