"""``IndexBuilder`` and ``Index``: the token-gradient index over a training set for one CRF."""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING

import numpy as np

from . import _arrays as A
from . import _lib
from ._callback import Callback
from ._enums import Storage, TokenStat, enum_value
from ._handle import Handle, new_handle
from .crf import Crf

if TYPE_CHECKING:
    from .query import Query

#: One training token of an index, as :meth:`Index.tokens` returns them.
TOKEN_DTYPE = np.dtype([("doc_id", "<u8"), ("position", "<u4"), ("label", "<u4")])


class IndexBuilder(Handle):
    """Builds an :class:`Index` for ``crf`` (kept alive by the library) from training sequences.

    ``storage``: how features are stored, ``"f32"`` (scores equal the dense computation),
    ``"f16"`` (half the bytes) or ``"int8"`` (a quarter); see :class:`Storage`.
    ``progress(done, total)`` is called after each added sequence with the tokens indexed so
    far and ``expected_tokens`` (0 when not given); a true return value cancels the add (it
    then raises ``SEGINF_ERR_CANCELLED`` and adds nothing), and an exception it raises is
    re-raised by the add.

    One thread at a time. :meth:`finish` consumes the builder; ``close()`` discards it.
    """

    _free_fn = "seginf_index_builder_free"

    def __init__(self, crf: Crf, *, storage="f32", expected_tokens: int | None = None, progress=None):
        lib = _lib.get()
        self._dims = (crf.feature_dim, crf.num_labels)
        self._progress = None
        opts = new_handle(lib.seginf_index_options_new)
        try:
            _lib.check(lib.seginf_index_options_set_storage(opts, enum_value(Storage, storage)))
            if expected_tokens is not None:
                _lib.check(
                    lib.seginf_index_options_set_expected_tokens(
                        opts, A.index(expected_tokens, "expected_tokens")
                    )
                )
            if progress is not None:
                self._progress = Callback(_lib.PROGRESS_FN, progress)
                _lib.check(lib.seginf_index_options_set_progress(opts, self._progress.c_fn, None))
            ptr = new_handle(lib.seginf_index_builder_new, crf._handle(), opts)
        finally:
            lib.seginf_index_options_free(opts)
        super().__init__(ptr)

    def _call(self, status: int) -> None:
        if self._progress is not None:
            self._progress.reraise()
        _lib.check(status)

    def add(self, doc_id: int, features, labels) -> None:
        """Adds one training sequence: caller id ``doc_id`` (u64), features (n, d), gold labels
        (n,). Nothing is added on error (bad input, impossible labels, cancel)."""
        d, _ = self._dims
        x = A.features(features, d)
        y = A.labels(labels, x.shape[0])
        doc = A.index(doc_id, "doc_id")
        self._call(
            _lib.get().seginf_index_builder_add(
                self._handle(), doc, A.ptr(x, ctypes.c_float), x.shape[0], A.ptr(y, ctypes.c_uint32)
            )
        )

    def add_batch(self, doc_ids, features, labels, lengths) -> None:
        """Adds sequences stored back to back: sequence i has ``lengths[i]`` tokens and id
        ``doc_ids[i]``; ``features`` is (sum(lengths), d), ``labels`` (sum(lengths),). All or
        nothing."""
        d, _ = self._dims
        lens = A.integers(lengths, np.uintp, "lengths")
        docs = A.integers(doc_ids, np.uint64, "doc_ids", lens.shape[0])
        total = int(lens.sum())
        x = A.floats(features, "features", (total, d))
        y = A.labels(labels, total)
        self._call(
            _lib.get().seginf_index_builder_add_batch(
                self._handle(),
                A.ptr(docs, ctypes.c_uint64),
                A.ptr(x, ctypes.c_float),
                A.ptr(y, ctypes.c_uint32),
                A.ptr(lens, ctypes.c_size_t),
                lens.shape[0],
            )
        )

    @property
    def num_tokens(self) -> int:
        """Tokens added so far."""
        return _lib.get().seginf_index_builder_num_tokens(self._handle())

    def finish(self) -> Index:
        """The finished index. The builder is consumed (closed), on success and on error."""
        handle = self._handle()
        self._release()  # the library frees the builder whatever the outcome
        out = ctypes.c_void_p()
        _lib.check(_lib.get().seginf_index_builder_finish(handle, ctypes.byref(out)))
        return Index._from_ptr(out, self._dims)


class Index(Handle):
    """A read-only token-gradient index (any number of threads may query it; one
    :class:`Query` per thread). Made by :meth:`IndexBuilder.finish` or :meth:`Index.open`.
    The library keeps its CRF alive; queries keep the index alive."""

    _free_fn = "seginf_index_free"

    def __init__(self, *args, **kwargs):
        raise TypeError("make an Index with IndexBuilder(...).finish() or Index.open(path, crf)")

    @classmethod
    def _from_ptr(cls, ptr, dims) -> Index:
        obj = cls.__new__(cls)
        Handle.__init__(obj, ptr)
        obj._dims = dims
        return obj

    @classmethod
    def open(cls, path, crf: Crf) -> Index:
        """Opens a saved index memory-mapped, for the CRF it was built with (validated first:
        header, sizes, labels, checksum; ``SEGINF_ERR_MODEL_MISMATCH`` for another CRF)."""
        ptr = new_handle(_lib.get().seginf_index_open, A.path_bytes(path), crf._handle())
        return cls._from_ptr(ptr, (crf.feature_dim, crf.num_labels))

    def save(self, path) -> None:
        """Writes the index to ``path`` (one safetensors file, atomically)."""
        _lib.check(_lib.get().seginf_index_save(self._handle(), A.path_bytes(path)))

    @property
    def feature_dim(self) -> int:
        """d of the index's CRF."""
        return self._dims[0]

    @property
    def num_labels(self) -> int:
        """C of the index's CRF."""
        return self._dims[1]

    @property
    def num_tokens(self) -> int:
        """N, the number of training tokens."""
        return _lib.get().seginf_index_num_tokens(self._handle())

    @property
    def ranking_copy_bytes(self) -> int:
        """Bytes held by the i16 copy of the rows that batches rank through on an f32/f16
        index (0 until the first batch builds it; see :meth:`Query.set_ranking_copy`)."""
        return _lib.get().seginf_index_ranking_copy_bytes(self._handle())

    @property
    def num_sequences(self) -> int:
        """S, the number of training sequences."""
        return _lib.get().seginf_index_num_sequences(self._handle())

    @property
    def storage(self) -> Storage:
        """How features are stored."""
        return Storage(_lib.get().seginf_index_storage(self._handle()))

    def token_stats(self, stat) -> np.ndarray:
        """One statistic of every training token in index order, (N,) float64: ``"loss"``
        (CL(k,k)), ``"entropy"`` (nats, of p(y_k|x)) or ``"grad_norm"`` (see :class:`TokenStat`)."""
        out = np.empty(self.num_tokens, dtype=np.float64)
        _lib.check(
            _lib.get().seginf_index_token_stats(
                self._handle(), enum_value(TokenStat, stat), A.ptr(out, ctypes.c_double), out.size
            )
        )
        return out

    def token(self, k: int) -> tuple[int, int, int]:
        """``(doc_id, position, label)`` of training token ``k`` (0 <= k < N)."""
        doc, pos, lab = ctypes.c_uint64(), ctypes.c_uint32(), ctypes.c_uint32()
        k = A.index(k, "k")
        _lib.check(
            _lib.get().seginf_index_token(
                self._handle(), k, ctypes.byref(doc), ctypes.byref(pos), ctypes.byref(lab)
            )
        )
        return doc.value, pos.value, lab.value

    def tokens(self) -> np.ndarray:
        """Every training token in index order, a (N,) structured array of :data:`TOKEN_DTYPE`
        (one library call per token)."""
        n = self.num_tokens
        out = np.empty(n, dtype=TOKEN_DTYPE)
        lib, h = _lib.get(), self._handle()
        doc, pos, lab = ctypes.c_uint64(), ctypes.c_uint32(), ctypes.c_uint32()
        refs = ctypes.byref(doc), ctypes.byref(pos), ctypes.byref(lab)
        for k in range(n):
            _lib.check(lib.seginf_index_token(h, k, *refs))
            out[k] = (doc.value, pos.value, lab.value)
        return out

    def num_documents(self, doc_id_shift: int = 0) -> int:
        """Documents :meth:`Query.rank_training` reports: distinct ``doc_id >> doc_id_shift``
        (0 <= shift <= 63; 32 when doc ids are ``document << 32 | sentence``)."""
        out = ctypes.c_size_t()
        shift = A.index(doc_id_shift, "doc_id_shift")
        _lib.check(_lib.get().seginf_index_num_documents(self._handle(), shift, ctypes.byref(out)))
        return out.value

    def query(self, **options) -> Query:
        """A new :class:`Query` on this index; ``options`` as :class:`Query` takes them."""
        from .query import Query

        return Query(self, **options)
