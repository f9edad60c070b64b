"""``Crf``: a linear-chain CRF over C labels on d-dimensional features (``seginf_crf``).

Shapes and dtypes (every method):

- ``features``: (n, d) real array, passed as float32 (a C-contiguous float32 array is passed
  without a copy; other dtypes are converted). NaN or infinity raises ``SEGINF_ERR_NON_FINITE``.
- ``labels``: (n,) integer array with values in [0, C), passed as uint32.
- Results are float64 arrays (uint32 for label sequences), allocated here unless an ``out``
  array of the exact dtype and shape is given, which the library then fills in place.
- Segments ``[first, last]`` are inclusive token positions, ``0 <= first <= last < n``.
"""

from __future__ import annotations

import ctypes

import numpy as np

from . import _arrays as A
from . import _lib
from ._enums import Param, TagScheme, enum_value
from ._errors import Status, python_error
from ._handle import Handle, new_handle


class Crf(Handle):
    """A linear-chain CRF (immutable; may be shared by threads).

    ``Crf(weights, transitions, bias=None, start=None, end=None)`` copies the arrays:

    - ``weights``: W, (C, d); emission scores are ``u_t[j] = W[j] . f_t + b[j]``;
    - ``transitions``: A, (C, C), ``A[from, to]``;
    - ``bias`` b, ``start`` s, ``end`` e: (C,) each, or None for "absent".

    ``S(y) = s[y_0] + sum_t u_t[y_t] + sum_{t>=1} A[y_{t-1}, y_t] + e[y_{n-1}]`` and
    ``p(y|x) = exp(S(y)) / Z(x)``. ``-inf`` entries of A, s and e forbid a transition, start or
    end label; W and b must be finite. Values are passed as float32.
    """

    _free_fn = "seginf_crf_free"

    def __init__(self, weights, transitions, bias=None, start=None, end=None):
        w = A.floats(weights, "weights", (None, None))
        c, d = w.shape
        a = A.floats(transitions, "transitions", (c, c))
        vecs = [
            None if v is None else A.floats(v, name, (c,))
            for v, name in ((bias, "bias"), (start, "start"), (end, "end"))
        ]
        lib = _lib.get()
        f = ctypes.c_float
        ptr = new_handle(
            lib.seginf_crf_new,
            c,
            d,
            A.ptr(w, f),
            A.ptr(vecs[0], f),
            A.ptr(a, f),
            A.ptr(vecs[1], f),
            A.ptr(vecs[2], f),
        )
        super().__init__(ptr)

    @classmethod
    def _from_ptr(cls, ptr) -> Crf:
        obj = cls.__new__(cls)
        Handle.__init__(obj, ptr)
        return obj

    @classmethod
    def load_safetensors(
        cls,
        path,
        *,
        weight: str | None = None,
        bias: str | None = None,
        transitions: str | None = None,
        start: str | None = None,
        end: str | None = None,
        transitions_to_from: bool = False,
    ) -> Crf:
        """Loads a CRF from a safetensors file (F32, F64, F16 or BF16 tensors).

        Tensor names default to pytorch-crf's plus an ``nn.Linear``: ``weight`` (C, d),
        ``bias``, ``transitions``, ``start_transitions``, ``end_transitions``; the optional
        blocks are loaded when present, and ``""`` means never load that block.
        ``transitions_to_from=True`` reads transitions stored ``[to][from]`` (flair).
        """
        lib = _lib.get()
        names = {
            Param.WEIGHT: weight,
            Param.BIAS: bias,
            Param.TRANSITIONS: transitions,
            Param.START: start,
            Param.END: end,
        }
        opts = None
        if any(v is not None for v in names.values()) or transitions_to_from:
            opts = new_handle(lib.seginf_load_options_new)
        try:
            if opts is not None:
                for param, name in names.items():
                    if name is not None:
                        _lib.check(
                            lib.seginf_load_options_set_tensor_name(opts, int(param), name.encode("utf-8"))
                        )
                _lib.check(
                    lib.seginf_load_options_set_transitions_to_from(opts, 1 if transitions_to_from else 0)
                )
            return cls._from_ptr(new_handle(lib.seginf_crf_load_safetensors, A.path_bytes(path), opts))
        finally:
            lib.seginf_load_options_free(opts)

    # --- shape and parameters -------------------------------------------------------------

    @property
    def num_labels(self) -> int:
        """C, the number of labels."""
        return _lib.get().seginf_crf_num_labels(self._handle())

    @property
    def feature_dim(self) -> int:
        """d, the feature dimension."""
        return _lib.get().seginf_crf_feature_dim(self._handle())

    @property
    def num_params(self) -> int:
        """Length of the dense parameter/gradient vector: C*d + C*C + C per b, s, e present."""
        return _lib.get().seginf_crf_num_params(self._handle())

    def param_offset(self, param) -> int | None:
        """Where block ``param`` (a :class:`Param` or its name) starts in the dense vector, or
        None when the model has no such block."""
        off = ctypes.c_size_t()
        _lib.check(
            _lib.get().seginf_crf_param_offset(self._handle(), enum_value(Param, param), ctypes.byref(off))
        )
        return None if off.value == ctypes.c_size_t(-1).value else off.value

    def params(self) -> np.ndarray:
        """All parameters as a float64 vector (``-inf`` kept), ordered W (row-major), b,
        A (row-major), s, e, absent blocks skipped."""
        out = np.empty(self.num_params, dtype=np.float64)
        _lib.check(_lib.get().seginf_crf_get_params(self._handle(), A.ptr(out, ctypes.c_double), out.size))
        return out

    def param_blocks(self) -> dict:
        """The parameters by block: ``{"weight": (C, d), "bias": (C,), "transitions": (C, C),
        "start": (C,), "end": (C,)}``, float64 views into one :meth:`params` vector; absent
        blocks are missing from the dict."""
        theta = self.params()
        c, d = self.num_labels, self.feature_dim
        shapes = {
            Param.WEIGHT: (c, d),
            Param.BIAS: (c,),
            Param.TRANSITIONS: (c, c),
            Param.START: (c,),
            Param.END: (c,),
        }
        blocks = {}
        for param, shape in shapes.items():
            off = self.param_offset(param)
            if off is not None:
                size = int(np.prod(shape))
                blocks[param.name.lower()] = theta[off : off + size].reshape(shape)
        return blocks

    # --- inference ------------------------------------------------------------------------

    def _x(self, features) -> np.ndarray:
        return A.features(features, self.feature_dim)

    def viterbi(self, features) -> tuple[np.ndarray, float]:
        """The most likely labelling ``y*`` ((n,) uint32; ties to the smaller label) and its
        unnormalised path score ``S(y*)``."""
        x = self._x(features)
        out = np.empty(x.shape[0], dtype=np.uint32)
        score = ctypes.c_double()
        _lib.check(
            _lib.get().seginf_crf_viterbi(
                self._handle(),
                A.ptr(x, ctypes.c_float),
                x.shape[0],
                A.ptr(out, ctypes.c_uint32),
                ctypes.byref(score),
            )
        )
        return out, score.value

    def log_likelihood(self, features, labels) -> float:
        """``log p(y|x) = S(y) - log Z(x)``; ``-inf`` when the labels use a forbidden transition."""
        x = self._x(features)
        y = A.labels(labels, x.shape[0])
        out = ctypes.c_double()
        _lib.check(
            _lib.get().seginf_crf_log_likelihood(
                self._handle(),
                A.ptr(x, ctypes.c_float),
                x.shape[0],
                A.ptr(y, ctypes.c_uint32),
                ctypes.byref(out),
            )
        )
        return out.value

    def log_partition(self, features) -> float:
        """``log Z(x)``; ``-inf`` when the constraints allow no labelling of length n."""
        x = self._x(features)
        out = ctypes.c_double()
        _lib.check(
            _lib.get().seginf_crf_log_partition(
                self._handle(), A.ptr(x, ctypes.c_float), x.shape[0], ctypes.byref(out)
            )
        )
        return out.value

    def marginals(self, features, out=None) -> np.ndarray:
        """Token marginals ``p(y_t = j | x)``, (n, C) float64 (into ``out`` when given)."""
        x = self._x(features)
        res = A.out_array(out, (x.shape[0], self.num_labels), np.float64)
        _lib.check(
            _lib.get().seginf_crf_marginals(
                self._handle(), A.ptr(x, ctypes.c_float), x.shape[0], A.ptr(res, ctypes.c_double)
            )
        )
        return res

    def pairwise_marginals(self, features) -> np.ndarray:
        """``p(y_{t-1} = i, y_t = j | x)``, (n-1, C, C) float64 (empty for n = 1)."""
        x = self._x(features)
        c = self.num_labels
        res = np.zeros((max(x.shape[0] - 1, 0), c, c), dtype=np.float64)
        buf = res if res.size else np.zeros(1)  # the library wants a non-NULL pointer even for n = 1
        _lib.check(
            _lib.get().seginf_crf_pairwise_marginals(
                self._handle(), A.ptr(x, ctypes.c_float), x.shape[0], A.ptr(buf, ctypes.c_double)
            )
        )
        return res

    # --- segments ---------------------------------------------------------------------------

    def _segment_call(self, fn_name, features, labels, first, last, out_shape, out=None):
        x = self._x(features)
        y = A.labels(labels, x.shape[0])
        first = A.index(first, "first", Status.ERR_BAD_SEGMENT)
        last = A.index(last, "last", Status.ERR_BAD_SEGMENT)
        if out_shape is None:  # a scalar: the library checks the segment
            res = ctypes.c_double()
            dest = ctypes.byref(res)
        else:  # check before sizing the output by the segment
            if not first <= last < x.shape[0]:
                raise python_error(
                    Status.ERR_BAD_SEGMENT,
                    f"segment [{first}, {last}] is not inside a sequence of {x.shape[0]} tokens",
                )
            res = A.out_array(out, out_shape(last - first + 1), np.float64)
            dest = A.ptr(res, ctypes.c_double)
        fn = getattr(_lib.get(), fn_name)
        _lib.check(
            fn(
                self._handle(),
                A.ptr(x, ctypes.c_float),
                x.shape[0],
                A.ptr(y, ctypes.c_uint32),
                first,
                last,
                dest,
            )
        )
        return res.value if out_shape is None else res

    def segment_loss(self, features, labels, first: int, last: int) -> float:
        """The conditional loss ``CL(first, last) = -log p(y_first..y_last | y outside, x)``
        (``+inf`` when the labels are impossible); ``CL(0, n-1) = -log p(y|x)``."""
        return self._segment_call("seginf_crf_segment_loss", features, labels, first, last, None)

    def segment_marginals(self, features, labels, first: int, last: int) -> np.ndarray:
        """``q_t[j] = p(y_t = j | y outside [first, last], x)``, (last-first+1, C) float64."""
        c = self.num_labels
        return self._segment_call(
            "seginf_crf_segment_marginals", features, labels, first, last, lambda m: (m, c)
        )

    def segment_error_vectors(self, features, labels, first: int, last: int) -> np.ndarray:
        """``r_t = q_t - onehot(y_t)`` for t in [first, last], (last-first+1, C) float64: the
        emission gradient of CL is ``sum_t outer(r_t, f_t)``."""
        c = self.num_labels
        return self._segment_call(
            "seginf_crf_segment_error_vectors", features, labels, first, last, lambda m: (m, c)
        )

    def segment_gradient(self, features, labels, first: int, last: int, out=None) -> np.ndarray:
        """The gradient of ``CL(first, last)`` over all parameters, a dense (num_params,)
        float64 vector in the order of :meth:`params` (into ``out`` when given). With
        ``first = 0, last = n-1`` it is the gradient of the whole-sequence NLL."""
        p = self.num_params
        return self._segment_call(
            "seginf_crf_segment_gradient", features, labels, first, last, lambda m: (p,), out
        )

    # --- constraints --------------------------------------------------------------------------

    def with_constraints(self, scheme, label_names) -> Crf:
        """A new CRF with ``-inf`` wherever ``scheme`` (a :class:`TagScheme` or its name: "bio",
        "iob1", "bioes") forbids a transition, start or end label, for labels named like
        ``["O", "B-PER", "I-PER"]`` (C names). Start/end vectors are added when absent."""
        names, keep = A.c_strings(label_names)
        lib = _lib.get()
        ptr = new_handle(
            lib.seginf_crf_with_constraints, self._handle(), enum_value(TagScheme, scheme), names, len(keep)
        )
        return Crf._from_ptr(ptr)


def constraint_mask(scheme, label_names) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What ``scheme`` allows for the named labels: ``(transitions (C, C) [from, to], start
    (C,), end (C,))`` bool arrays, True = allowed."""
    names, keep = A.c_strings(label_names)
    c = len(keep)
    trans = np.zeros((c, c), dtype=np.uint8)
    start = np.zeros(c, dtype=np.uint8)
    end = np.zeros(c, dtype=np.uint8)
    u8 = ctypes.c_uint8
    _lib.check(
        _lib.get().seginf_constraint_mask(
            enum_value(TagScheme, scheme), names, c, A.ptr(trans, u8), A.ptr(start, u8), A.ptr(end, u8)
        )
    )
    return trans.astype(bool), start.astype(bool), end.astype(bool)
