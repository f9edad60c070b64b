"""seginf: segment influence functions for linear-chain CRF taggers, over libseginf's C ABI.

Pure Python (ctypes) with NumPy arrays in and out. The library is found through
``$SEGINF_LIB``, else ``$CARGO_TARGET_DIR/{release,debug}`` and the repository's
``target/{release,debug}`` (see :func:`library_path`).

Scores follow ``I(test, train) = -g_test . H^-1 g_train``: **negative = supporting** (the
training label lowered the test segment's loss), **positive = opposing**.

>>> import numpy as np, seginf
>>> with seginf.Crf(W, A, bias=b) as crf:                          # doctest: +SKIP
...     builder = seginf.IndexBuilder(crf, storage="f32")
...     for doc_id, (x, y) in enumerate(train):
...         builder.add(doc_id, x, y)
...     with builder.finish() as index, index.query() as q:
...         supporting, opposing = q.run(x_test, y_pred, first=3, last=4, k=10)
...         supporting["doc_id"], supporting["position"], supporting["score"]

Every failure raises :class:`SeginfError` (``status``, ``name``, ``message``).
"""

from ._enums import Granularity, Hessian, Normalization, Param, RankMethod, Storage, TagScheme, TokenStat
from ._errors import LibraryError, SeginfError, Status
from ._lib import HEADER_VERSION
from .crf import Crf, constraint_mask
from .index import TOKEN_DTYPE, Index, IndexBuilder
from .query import DOC_SCORE_DTYPE, HIT_DTYPE, Query, concat_sequences
from .train import Curvature, Trainer, exact_influence


def version() -> str:
    """``seginf_version()`` of the loaded library, e.g. ``"0.1.0"``."""
    from . import _lib

    return _lib.get().seginf_version().decode()


def tiles_available() -> bool:
    """``seginf_tiles_available()``: whether this process runs the Intel AMX tile kernels
    (results are the same either way; the first call asks Linux for the tile state, see the
    header; ``SEGINF_AMX=off`` in the environment keeps a process off them)."""
    from . import _lib

    return bool(_lib.get().seginf_tiles_available())


def library_path():
    """The path of the loaded libseginf (loading it on first use)."""
    from . import _lib

    return _lib.library_path()


__version__ = ".".join(map(str, HEADER_VERSION))

__all__ = [
    "DOC_SCORE_DTYPE",
    "HEADER_VERSION",
    "HIT_DTYPE",
    "TOKEN_DTYPE",
    "Crf",
    "Curvature",
    "Granularity",
    "Hessian",
    "Index",
    "IndexBuilder",
    "LibraryError",
    "Normalization",
    "Param",
    "Query",
    "RankMethod",
    "SeginfError",
    "Status",
    "Storage",
    "TagScheme",
    "TokenStat",
    "Trainer",
    "concat_sequences",
    "constraint_mask",
    "exact_influence",
    "library_path",
    "tiles_available",
    "version",
]
