"""``Query``: influence of training tokens (or sequences) on a test segment.

Scores are ``I(test, train) = -g_test . H^-1 g_train``: **negative = supporting** (the training
label lowered the test segment's loss), **positive = opposing**. With the default identity
Hessian (damping 1, the paper's choice) a token's score is ``-g_test . g_train / damping``,
where ``g`` are the dense gradients :meth:`Crf.segment_gradient` gives (the test segment's
CL, the training token's CL(k, k)).
"""

from __future__ import annotations

import ctypes

import numpy as np

from . import _arrays as A
from . import _lib
from ._enums import Granularity, Hessian, Normalization, RankMethod, enum_value
from ._errors import Status, python_error
from ._handle import Handle, new_handle

#: One ranked training item, the layout of ``seginf_hit``. For instance granularity
#: ``position`` and ``label`` are 2**32 - 1 (the hit is the whole sequence ``doc_id``).
HIT_DTYPE = np.dtype([("doc_id", "<u8"), ("position", "<u4"), ("label", "<u4"), ("score", "<f8")])
assert HIT_DTYPE.itemsize == ctypes.sizeof(_lib.Hit)

#: One training document's aggregated misannotation score, the layout of ``seginf_doc_score``:
#: mean and max over its items (tokens, or sequences for per-sequence methods) with a finite
#: score (NaN when none), and how many those are.
DOC_SCORE_DTYPE = np.dtype([("doc_id", "<u8"), ("mean", "<f8"), ("max", "<f8"), ("items", "<u8")])
assert DOC_SCORE_DTYPE.itemsize == ctypes.sizeof(_lib.DocScore)


class Query(Handle):
    """A prepared query over one :class:`Index` (one thread at a time; make one per thread).

    Options (each also has a setter): ``granularity`` (:class:`Granularity`: "token",
    "instance", "nearest_dot", "nearest_cosine"), ``normalization`` ("none" or
    "gradient_norm", RelatIF-style, which favours causes over large-gradient tokens),
    ``damping`` (identity Hessian ``H = damping * I``), ``curvature`` (a fitted
    :class:`Curvature`, replacing the identity), ``label_filter`` (keep only training tokens
    with these gold labels), ``excluded_docs`` (skip these doc ids).

    Test inputs: ``features`` (n, d) (float32 without a copy), ``labels`` (n,) (gold or
    predicted: the caller chooses), segment ``[first, last]`` inclusive.
    """

    _free_fn = "seginf_query_free"

    def __init__(
        self,
        index,
        *,
        granularity=None,
        normalization=None,
        damping=None,
        curvature=None,
        label_filter=None,
        excluded_docs=None,
    ):
        super().__init__(new_handle(_lib.get().seginf_query_new, index._handle()))
        self._dims = index._dims
        self._sizes = (index.num_tokens, index.num_sequences)
        if granularity is not None:
            self.set_granularity(granularity)
        if normalization is not None:
            self.set_normalization(normalization)
        if damping is not None and curvature is not None:
            raise python_error(
                Status.ERR_INVALID_ARGUMENT, "give damping (identity Hessian) or curvature, not both"
            )
        if damping is not None:
            self.set_hessian(damping)
        if curvature is not None:
            self.set_curvature(curvature)
        if label_filter is not None:
            self.set_label_filter(label_filter)
        if excluded_docs is not None:
            self.set_excluded_docs(excluded_docs)

    # --- options ------------------------------------------------------------------------------

    def set_granularity(self, granularity) -> None:
        """What is scored: training tokens, sequences (Koh & Liang) or nearest neighbours
        (score = -similarity, so the most similar supports)."""
        _lib.check(
            _lib.get().seginf_query_set_granularity(self._handle(), enum_value(Granularity, granularity))
        )

    def set_normalization(self, normalization) -> None:
        """``"none"`` or ``"gradient_norm"`` (divide by the training item's gradient norm)."""
        _lib.check(
            _lib.get().seginf_query_set_normalization(
                self._handle(), enum_value(Normalization, normalization)
            )
        )

    def set_ranking_copy(self, enabled: bool) -> None:
        """Whether batches of more than 4 test columns on an f32/f16 index may rank through
        the index's i16 copy of its rows (default True: an integer GEMM at about twice the f32
        sgemm's rate, built once per index and kept with it, 2*d + 4 bytes per token).
        Results are identical either way."""
        _lib.check(_lib.get().seginf_query_set_ranking_copy(self._handle(), 1 if enabled else 0))

    def set_hessian(self, damping: float = 1.0, mode=Hessian.IDENTITY) -> None:
        """The identity Hessian ``H = damping * I`` (damping finite, > 0), replacing any
        curvature. Other modes need a fitted :class:`Curvature` (:meth:`set_curvature`)."""
        _lib.check(
            _lib.get().seginf_query_set_hessian(self._handle(), enum_value(Hessian, mode), float(damping))
        )

    def set_curvature(self, curvature) -> None:
        """Uses a fitted K-FAC, EK-FAC or exact :class:`Curvature` (fitted at this index's CRF)
        as the inverse Hessian; the query keeps its own reference."""
        _lib.check(_lib.get().seginf_query_set_curvature(self._handle(), curvature._handle()))

    def set_label_filter(self, labels) -> None:
        """Keeps only training tokens whose gold label is in ``labels``; None or empty removes
        the filter. Not valid with instance granularity."""
        arr = np.atleast_1d(np.asarray([] if labels is None else labels))
        y = A.labels(arr.astype(np.uint32) if arr.size == 0 else arr, None, "label_filter")
        _lib.check(
            _lib.get().seginf_query_set_label_filter(
                self._handle(), A.ptr(y, ctypes.c_uint32) if y.size else None, y.size
            )
        )

    def set_excluded_docs(self, doc_ids) -> None:
        """Skips training items of these doc ids; None or empty clears the set."""
        docs = A.integers([] if doc_ids is None else np.atleast_1d(doc_ids), np.uint64, "doc_ids")
        _lib.check(
            _lib.get().seginf_query_set_excluded_docs(
                self._handle(), A.ptr(docs, ctypes.c_uint64) if docs.size else None, docs.size
            )
        )

    @property
    def num_items(self) -> int:
        """Length of :meth:`scores`: N tokens, or S sequences for instance granularity."""
        return _lib.get().seginf_query_num_items(self._handle())

    # --- running ------------------------------------------------------------------------------

    def _test(self, features, labels):
        d, _ = self._dims
        x = A.features(features, d)
        y = A.labels(labels, x.shape[0])
        return x, y

    def _capacity(self, k) -> int:
        """Hit buffer length for a top-k request: k, or fewer when the index has fewer items
        (the ranking is the same; a huge k does not allocate a huge buffer). 0 stays 0 for
        the library to reject."""
        return min(A.index(k, "k"), self.num_items)

    def run(self, features, labels, first: int, last: int, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The top ``k`` training items against segment ``[first, last]`` of one test sequence.

        Returns ``(supporting, opposing)``, structured arrays of :data:`HIT_DTYPE` (fields
        ``doc_id, position, label, score``): supporting most negative score first, opposing
        most positive first, each of length ``k`` unless the filters leave fewer items. Ties
        break by ``(doc_id, position)``; scores are exact, equal to :meth:`scores`.
        """
        x, y = self._test(features, labels)
        first = A.index(first, "first", Status.ERR_BAD_SEGMENT)
        last = A.index(last, "last", Status.ERR_BAD_SEGMENT)
        k = self._capacity(k)
        sup = np.zeros(k, dtype=HIT_DTYPE)
        opp = np.zeros(k, dtype=HIT_DTYPE)
        found = ctypes.c_size_t()
        hit = _lib.Hit
        _lib.check(
            _lib.get().seginf_query_run(
                self._handle(),
                A.ptr(x, ctypes.c_float),
                x.shape[0],
                A.ptr(y, ctypes.c_uint32),
                first,
                last,
                A.ptr(sup, hit),
                A.ptr(opp, hit),
                k,
                ctypes.byref(found),
            )
        )
        return sup[: found.value], opp[: found.value]

    def run_batch(
        self, features, labels, lengths, segments, k: int = 10
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Many test segments in one pass over the index.

        Test sequences are stored back to back: sequence i has ``lengths[i]`` tokens,
        ``features`` is (sum(lengths), d), ``labels`` (sum(lengths),) (see
        :func:`seginf.concat_sequences`). ``segments`` is (m, 3): rows ``(sequence, first,
        last)``. Returns one ``(supporting, opposing)`` pair per segment, as :meth:`run` gives
        them (views into two (m, k) arrays).
        """
        d, _ = self._dims
        lens = A.integers(lengths, np.uintp, "lengths")
        total = int(lens.sum())
        x = A.floats(features, "features", (total, d))
        y = A.labels(labels, total)
        segs = np.asarray(segments)
        if segs.ndim != 2 or segs.shape[1] != 3:
            raise python_error(
                Status.ERR_DIMENSION_MISMATCH, f"segments has shape {segs.shape}, expected (m, 3)"
            )
        seq, first, last = (
            A.integers(segs[:, i].copy(), np.uintp, name)
            for i, name in enumerate(("segments[:, 0]", "segments[:, 1]", "segments[:, 2]"))
        )
        m = segs.shape[0]
        k = self._capacity(k)
        sup = np.zeros((m, k), dtype=HIT_DTYPE)
        opp = np.zeros((m, k), dtype=HIT_DTYPE)
        found = np.zeros(m, dtype=np.uintp)
        sz, hit = ctypes.c_size_t, _lib.Hit
        _lib.check(
            _lib.get().seginf_query_run_batch(
                self._handle(),
                A.ptr(x, ctypes.c_float),
                A.ptr(y, ctypes.c_uint32),
                A.ptr(lens, sz),
                lens.shape[0],
                A.ptr(seq, sz),
                A.ptr(first, sz),
                A.ptr(last, sz),
                m,
                A.ptr(sup, hit),
                A.ptr(opp, hit),
                k,
                A.ptr(found, sz),
            )
        )
        return [(sup[j, : found[j]], opp[j, : found[j]]) for j in range(m)]

    def scores(self, features, labels, first: int, last: int, out=None) -> np.ndarray:
        """Every item's score against segment ``[first, last]``, in index order: a
        (num_items,) float64 array (into ``out`` when given). Items the filters exclude are NaN."""
        x, y = self._test(features, labels)
        first = A.index(first, "first", Status.ERR_BAD_SEGMENT)
        last = A.index(last, "last", Status.ERR_BAD_SEGMENT)
        res = A.out_array(out, (self.num_items,), np.float64)
        _lib.check(
            _lib.get().seginf_query_scores(
                self._handle(),
                A.ptr(x, ctypes.c_float),
                x.shape[0],
                A.ptr(y, ctypes.c_uint32),
                first,
                last,
                A.ptr(res, ctypes.c_double),
                res.size,
            )
        )
        return res

    def rank_training(self, method, clean=None, top: int = 10, doc_id_shift: int = 0):
        """Scores every training token for "is this label wrong?" (paper section 6.1) and
        ranks the training documents. Higher = more suspect, for every method.

        ``method``: a :class:`RankMethod` or its name. The loss, entropy and gradient-norm
        baselines read the index only; ``"segment_influence"`` (a token's mean of its ``top``
        largest influences on the clean tokens: positive = it raises their loss),
        ``"segment_nearest"`` (mean of its ``top`` largest feature dot products with clean
        tokens of another label) and ``"instance_influence"`` (a sequence's influence
        averaged over the clean sequences) need ``clean``: ``[(features (n, d), labels
        (n,)), ...]`` of expert-labelled sequences. The influence methods use this query's
        Hessian (damping or curvature) and normalisation; use unnormalised scores to find
        noisy labels; the query's granularity is not used, and its label filter and excluded
        docs must be unset. Documents are ``doc_id >> doc_id_shift``.

        Returns ``(token_scores, documents)``: a (N,) float64 score per training token in
        index order (per-sequence methods: the sequence's score; NaN where undefined), and a
        structured array of :data:`DOC_SCORE_DTYPE`, most suspect first by mean (NaN last,
        ties by doc id).
        """
        m = enum_value(RankMethod, method)
        top = A.index(top, "top")
        shift = A.index(doc_id_shift, "doc_id_shift")
        if clean:
            x, y, lengths = concat_sequences(clean)
            x = A.floats(x, "clean features", (None, self._dims[0]))
        else:
            x = y = lengths = None
        num_tokens, num_sequences = self._sizes
        scores = np.empty(num_tokens, dtype=np.float64)
        docs = np.zeros(num_sequences, dtype=DOC_SCORE_DTYPE)  # documents <= sequences
        found = ctypes.c_size_t()
        _lib.check(
            _lib.get().seginf_rank_training(
                self._handle(),
                m,
                top,
                shift,
                A.ptr(x, ctypes.c_float),
                A.ptr(y, ctypes.c_uint32),
                A.ptr(lengths, ctypes.c_size_t),
                0 if lengths is None else lengths.shape[0],
                A.ptr(scores, ctypes.c_double),
                scores.size,
                A.ptr(docs, _lib.DocScore),
                docs.size,
                ctypes.byref(found),
            )
        )
        return scores, docs[: found.value]


def concat_sequences(sequences) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``[(features_i, labels_i), ...]`` -> ``(features (sum n_i, d) float32, labels (sum n_i,)
    uint32, lengths (m,))``, the back-to-back layout of the batch calls (a copy)."""
    sequences = list(sequences)
    if not sequences:
        raise python_error(Status.ERR_INVALID_ARGUMENT, "no sequences")
    xs = [np.asarray(f) for f, _ in sequences]
    ys = [np.asarray(y) for _, y in sequences]
    lengths = np.array([x.shape[0] if x.ndim else 0 for x in xs], dtype=np.uintp)
    for i, (x, y) in enumerate(zip(xs, ys)):
        if x.ndim != 2 or y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise python_error(
                Status.ERR_DIMENSION_MISMATCH,
                f"sequence {i}: features {x.shape} and labels {y.shape} do not match",
            )
    features = np.concatenate(xs).astype(np.float32, copy=False)
    labels = A.labels(np.concatenate(ys), None)
    return features, labels, lengths
