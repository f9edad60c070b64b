"""Finding and loading libseginf, the ctypes prototypes of include/seginf.h, and status checks.

The library is loaded on first use (``get()``), from, in order:

1. ``$SEGINF_LIB`` (the path of the shared library; an error if it is set but missing);
2. ``$CARGO_TARGET_DIR/release``, ``$CARGO_TARGET_DIR/debug`` when that variable is set;
3. ``target/release``, ``target/debug`` of the repository this package sits in.

Its ``seginf_version()`` must match the header version below (same major, and for a 0.x
library the same minor; a newer minor of a 1.x+ library is accepted).
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from ctypes import (
    POINTER,
    c_char_p,
    c_double,
    c_float,
    c_int,
    c_int32,
    c_size_t,
    c_uint8,
    c_uint32,
    c_uint64,
    c_void_p,
)
from pathlib import Path

from ._errors import LibraryError, SeginfError, Status

#: SEGINF_VERSION_MAJOR/MINOR/PATCH of the include/seginf.h this module was written against.
HEADER_VERSION = (0, 1, 0)


class Hit(ctypes.Structure):
    """``seginf_hit`` (the layout of :data:`seginf.HIT_DTYPE`)."""

    _fields_ = [("doc_id", c_uint64), ("position", c_uint32), ("label", c_uint32), ("score", c_double)]


class DocScore(ctypes.Structure):
    """``seginf_doc_score`` (the layout of :data:`seginf.DOC_SCORE_DTYPE`)."""

    _fields_ = [("doc_id", c_uint64), ("mean", c_double), ("max", c_double), ("items", c_uint64)]


#: ``seginf_progress_fn``: (done, total, user) -> non-zero to cancel.
PROGRESS_FN = ctypes.CFUNCTYPE(c_int32, c_uint64, c_uint64, c_void_p)
#: ``seginf_train_progress_fn``: (iteration, objective, max_abs_gradient, user) -> non-zero to cancel.
TRAIN_PROGRESS_FN = ctypes.CFUNCTYPE(c_int32, c_uint64, c_double, c_double, c_void_p)

_H = c_void_p  # any opaque handle pointer
_HP = POINTER(c_void_p)  # handle out-parameter
_F32 = POINTER(c_float)
_F64 = POINTER(c_double)
_U32 = POINTER(c_uint32)
_U64 = POINTER(c_uint64)
_U8 = POINTER(c_uint8)
_SZ = POINTER(c_size_t)
_HIT = POINTER(Hit)
_S = c_int32  # seginf_status
_I = c_int32
_N = c_size_t

# name: (restype, argtypes), in the order of include/seginf.h.
_PROTOTYPES = {
    "seginf_version": (c_char_p, []),
    "seginf_tiles_available": (c_int, []),
    "seginf_status_name": (c_char_p, [_I]),
    "seginf_last_error_message": (_S, [c_char_p, _N, _SZ]),
    "seginf_crf_new": (_S, [_N, _N, _F32, _F32, _F32, _F32, _F32, _HP]),
    "seginf_crf_load_safetensors": (_S, [c_char_p, _H, _HP]),
    "seginf_crf_free": (None, [_H]),
    "seginf_crf_num_labels": (_N, [_H]),
    "seginf_crf_feature_dim": (_N, [_H]),
    "seginf_crf_num_params": (_N, [_H]),
    "seginf_crf_param_offset": (_S, [_H, _I, _SZ]),
    "seginf_crf_get_params": (_S, [_H, _F64, _N]),
    "seginf_crf_viterbi": (_S, [_H, _F32, _N, _U32, _F64]),
    "seginf_crf_log_likelihood": (_S, [_H, _F32, _N, _U32, _F64]),
    "seginf_crf_log_partition": (_S, [_H, _F32, _N, _F64]),
    "seginf_crf_marginals": (_S, [_H, _F32, _N, _F64]),
    "seginf_crf_pairwise_marginals": (_S, [_H, _F32, _N, _F64]),
    "seginf_crf_segment_loss": (_S, [_H, _F32, _N, _U32, _N, _N, _F64]),
    "seginf_crf_segment_marginals": (_S, [_H, _F32, _N, _U32, _N, _N, _F64]),
    "seginf_crf_segment_error_vectors": (_S, [_H, _F32, _N, _U32, _N, _N, _F64]),
    "seginf_crf_segment_gradient": (_S, [_H, _F32, _N, _U32, _N, _N, _F64]),
    "seginf_constraint_mask": (_S, [_I, POINTER(c_char_p), _N, _U8, _U8, _U8]),
    "seginf_crf_with_constraints": (_S, [_H, _I, POINTER(c_char_p), _N, _HP]),
    "seginf_load_options_new": (_S, [_HP]),
    "seginf_load_options_free": (None, [_H]),
    "seginf_load_options_set_tensor_name": (_S, [_H, _I, c_char_p]),
    "seginf_load_options_set_transitions_to_from": (_S, [_H, _I]),
    "seginf_index_options_new": (_S, [_HP]),
    "seginf_index_options_free": (None, [_H]),
    "seginf_index_options_set_storage": (_S, [_H, _I]),
    "seginf_index_options_set_expected_tokens": (_S, [_H, c_uint64]),
    "seginf_index_options_set_progress": (_S, [_H, PROGRESS_FN, c_void_p]),
    "seginf_index_builder_new": (_S, [_H, _H, _HP]),
    "seginf_index_builder_free": (None, [_H]),
    "seginf_index_builder_add": (_S, [_H, c_uint64, _F32, _N, _U32]),
    "seginf_index_builder_add_batch": (_S, [_H, _U64, _F32, _U32, _SZ, _N]),
    "seginf_index_builder_num_tokens": (_N, [_H]),
    "seginf_index_builder_finish": (_S, [_H, _HP]),
    "seginf_index_save": (_S, [_H, c_char_p]),
    "seginf_index_open": (_S, [c_char_p, _H, _HP]),
    "seginf_index_free": (None, [_H]),
    "seginf_index_num_tokens": (_N, [_H]),
    "seginf_index_ranking_copy_bytes": (_N, [_H]),
    "seginf_index_num_sequences": (_N, [_H]),
    "seginf_index_storage": (_I, [_H]),
    "seginf_index_token_stats": (_S, [_H, _I, _F64, _N]),
    "seginf_index_token": (_S, [_H, _N, _U64, _U32, _U32]),
    "seginf_index_num_documents": (_S, [_H, c_uint32, _SZ]),
    "seginf_query_new": (_S, [_H, _HP]),
    "seginf_query_free": (None, [_H]),
    "seginf_query_set_granularity": (_S, [_H, _I]),
    "seginf_query_set_normalization": (_S, [_H, _I]),
    "seginf_query_set_ranking_copy": (_S, [_H, _I]),
    "seginf_query_set_hessian": (_S, [_H, _I, c_double]),
    "seginf_query_set_curvature": (_S, [_H, _H]),
    "seginf_query_set_label_filter": (_S, [_H, _U32, _N]),
    "seginf_query_set_excluded_docs": (_S, [_H, _U64, _N]),
    "seginf_query_num_items": (_N, [_H]),
    "seginf_query_run": (_S, [_H, _F32, _N, _U32, _N, _N, _HIT, _HIT, _N, _SZ]),
    "seginf_query_run_batch": (_S, [_H, _F32, _U32, _SZ, _N, _SZ, _SZ, _SZ, _N, _HIT, _HIT, _N, _SZ]),
    "seginf_query_scores": (_S, [_H, _F32, _N, _U32, _N, _N, _F64, _N]),
    "seginf_rank_training": (
        _S,
        [_H, _I, _N, c_uint32, _F32, _U32, _SZ, _N, _F64, _N, POINTER(DocScore), _N, _SZ],
    ),
    "seginf_trainer_new": (_S, [_H, _HP]),
    "seginf_trainer_free": (None, [_H]),
    "seginf_trainer_add": (_S, [_H, _F32, _N, _U32, _U8]),
    "seginf_trainer_num_sequences": (_N, [_H]),
    "seginf_trainer_set_l2": (_S, [_H, c_double]),
    "seginf_trainer_set_tolerance": (_S, [_H, c_double]),
    "seginf_trainer_set_max_iterations": (_S, [_H, _N]),
    "seginf_trainer_set_init": (_S, [_H, _H]),
    "seginf_trainer_set_progress": (_S, [_H, TRAIN_PROGRESS_FN, c_void_p]),
    "seginf_trainer_run": (_S, [_H, _HP, _F64, _F64, _SZ]),
    "seginf_curvature_fit": (_S, [_H, _H, _I, c_double, _HP]),
    "seginf_curvature_save": (_S, [_H, c_char_p]),
    "seginf_curvature_open": (_S, [c_char_p, _H, _HP]),
    "seginf_curvature_free": (None, [_H]),
    "seginf_curvature_mode": (_I, [_H]),
    "seginf_curvature_last_solve": (_S, [_H, _SZ, _F64]),
    "seginf_exact_influence": (_S, [_H, _H, _H, _N, _N, _N, _F32, _N, _U32, _N, _N, _F64, _F64]),
}

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_path: Path | None = None


def _library_names() -> list[str]:
    if sys.platform == "darwin":
        return ["libseginf.dylib"]
    if sys.platform == "win32":
        return ["seginf.dll"]
    return ["libseginf.so"]


def candidate_paths() -> list[Path]:
    """Where the library is looked for when ``$SEGINF_LIB`` is not set, in order."""
    bases = []
    target_dir = os.environ.get("CARGO_TARGET_DIR")
    if target_dir:
        bases.append(Path(target_dir))
    bases.append(Path(__file__).resolve().parents[2] / "target")
    return [
        base / profile / name
        for base in bases
        for profile in ("release", "debug")
        for name in _library_names()
    ]


def find_library() -> Path:
    """The path of libseginf that ``get()`` loads (see the module docstring)."""
    env = os.environ.get("SEGINF_LIB")
    if env:
        path = Path(env)
        if not path.is_file():
            raise LibraryError(f"SEGINF_LIB={env!r} is not a file")
        return path
    candidates = candidate_paths()
    for path in candidates:
        if path.is_file():
            return path
    tried = "\n  ".join(str(p) for p in candidates)
    raise LibraryError(
        "libseginf not found: set SEGINF_LIB to its path, or build it with "
        f"`cargo build --release --lib` (looked in:\n  {tried})"
    )


def check_version(version: str) -> None:
    """Raises LibraryError unless a library of ``version`` fits HEADER_VERSION."""
    try:
        major, minor, _patch = (int(p) for p in version.split(".")[:3])
    except ValueError:
        raise LibraryError(f"libseginf reports an unparsable version {version!r}") from None
    want_major, want_minor, _ = HEADER_VERSION
    ok = major == want_major and (minor == want_minor if major == 0 else minor >= want_minor)
    if not ok:
        want = ".".join(map(str, HEADER_VERSION))
        raise LibraryError(
            f"libseginf {version} does not match the seginf Python module (written for {want})"
        )


def _load(path: Path) -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as e:
        raise LibraryError(f"cannot load {path}: {e}") from e
    for name, (restype, argtypes) in _PROTOTYPES.items():
        try:
            fn = getattr(lib, name)
        except AttributeError:
            raise LibraryError(f"{path} has no symbol {name}: an older or foreign library?") from None
        fn.restype = restype
        fn.argtypes = argtypes
    check_version(lib.seginf_version().decode())
    return lib


def get() -> ctypes.CDLL:
    """The loaded library (loaded, prototyped and version-checked on the first call)."""
    global _lib, _path
    if _lib is None:
        with _lock:
            if _lib is None:
                path = find_library()
                _lib = _load(path)
                _path = path
    return _lib


def library_path() -> Path:
    """The path of the loaded library (loading it if needed)."""
    get()
    assert _path is not None
    return _path


def last_error_message() -> str:
    """``seginf_last_error_message()`` of this thread."""
    lib = get()
    needed = c_size_t(0)
    lib.seginf_last_error_message(None, 0, ctypes.byref(needed))
    buf = ctypes.create_string_buffer(needed.value + 1)
    lib.seginf_last_error_message(buf, len(buf), ctypes.byref(needed))
    return buf.value.decode("utf-8", errors="replace")


def status_name(status: int) -> str:
    return get().seginf_status_name(int(status)).decode()


def check(status: int) -> None:
    """Raises SeginfError (with name and last error message) unless ``status`` is SEGINF_OK."""
    if status != Status.OK:
        raise SeginfError(status, status_name(status), last_error_message())
