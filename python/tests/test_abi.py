"""The Python module against include/seginf.h (enum values, version, struct layout), library
lookup, and passing NumPy buffers through without copies."""

import ctypes
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, make_crf, random_params, random_sequences

import seginf
from seginf import _lib

HEADER = (REPO / "include" / "seginf.h").read_text()

# Python enum -> (C enum name, prefix of its constants after SEGINF_)
ENUMS = {
    seginf.Status: ("seginf_status", ""),
    seginf.TagScheme: ("seginf_tag_scheme", "TAG_SCHEME_"),
    seginf.Param: ("seginf_param", "PARAM_"),
    seginf.Storage: ("seginf_storage", "STORAGE_"),
    seginf.TokenStat: ("seginf_token_stat", "TOKEN_"),
    seginf.Granularity: ("seginf_granularity", "GRANULARITY_"),
    seginf.Normalization: ("seginf_normalization", "NORMALIZATION_"),
    seginf.Hessian: ("seginf_hessian", "HESSIAN_"),
    seginf.RankMethod: ("seginf_rank_method", "RANK_"),
}


def header_enum(name):
    body = re.search(r"enum " + name + r"\n(?:.*\n)*? \{\n((?:.*\n)*?)\};", HEADER).group(1)
    return {k: int(v) for k, v in re.findall(r"^\s*SEGINF_(\w+) = (-?\d+),?$", body, re.MULTILINE)}


@pytest.mark.parametrize("cls", list(ENUMS), ids=lambda c: c.__name__)
def test_enums_match_the_header(cls):
    c_name, prefix = ENUMS[cls]
    want = {k[len(prefix) :]: v for k, v in header_enum(c_name).items()}
    assert want and {m.name: int(m) for m in cls} == want


def test_status_names_come_from_the_library():
    for status in seginf.Status:
        assert _lib.status_name(status) == "SEGINF_" + status.name
    assert _lib.status_name(-999) == "SEGINF_UNKNOWN_STATUS"


def test_version_matches_the_header():
    macros = tuple(
        int(re.search(rf"#define SEGINF_VERSION_{p} (\d+)", HEADER).group(1))
        for p in ("MAJOR", "MINOR", "PATCH")
    )
    assert seginf.HEADER_VERSION == macros
    assert seginf.version() == ".".join(map(str, macros))


def test_version_check_rule():
    major, minor, _ = seginf.HEADER_VERSION
    _lib.check_version(f"{major}.{minor}.99")
    for bad in (
        f"{major}.{minor + 1}.0" if major == 0 else f"{major + 1}.0.0",
        f"{major + 1}.{minor}.0",
        "garbage",
    ):
        with pytest.raises(seginf.LibraryError):
            _lib.check_version(bad)


def test_hit_layout_matches_seginf_hit():
    for field in ("doc_id", "position", "label", "score"):
        assert seginf.HIT_DTYPE.fields[field][1] == getattr(_lib.Hit, field).offset
    assert seginf.HIT_DTYPE.itemsize == ctypes.sizeof(_lib.Hit) == 24


def test_doc_score_layout_matches_seginf_doc_score():
    for field in ("doc_id", "mean", "max", "items"):
        assert seginf.DOC_SCORE_DTYPE.fields[field][1] == getattr(_lib.DocScore, field).offset
    assert seginf.DOC_SCORE_DTYPE.itemsize == ctypes.sizeof(_lib.DocScore) == 32


def test_library_lookup(monkeypatch, tmp_path):
    monkeypatch.setenv("SEGINF_LIB", str(tmp_path / "nope.so"))
    with pytest.raises(seginf.LibraryError, match="SEGINF_LIB"):
        _lib.find_library()
    monkeypatch.delenv("SEGINF_LIB")
    monkeypatch.setenv("CARGO_TARGET_DIR", str(tmp_path))
    paths = _lib.candidate_paths()
    assert paths[0].parent == tmp_path / "release" and paths[1].parent == tmp_path / "debug"
    assert paths[2].parent == REPO / "target" / "release"
    fake = tmp_path / "debug" / paths[1].name
    fake.parent.mkdir()
    fake.write_bytes(b"")
    assert _lib.find_library() == fake


def spy_on(monkeypatch, name, *arg_positions):
    """Replaces library function ``name`` by a wrapper recording the addresses passed at
    ``arg_positions``; returns the list of recorded tuples."""
    lib = _lib.get()
    original = getattr(lib, name)
    calls = []

    def spy(*args):
        calls.append(tuple(ctypes.cast(args[i], ctypes.c_void_p).value for i in arg_positions))
        return original(*args)

    monkeypatch.setattr(lib, name, spy)
    return calls


def test_float32_inputs_and_outputs_are_not_copied(monkeypatch, rng):
    c, d = 3, 4
    x = rng.normal(size=(5, d)).astype(np.float32)
    y = np.array([0, 1, 2, 1, 0], dtype=np.uint32)
    with make_crf(random_params(rng, c, d)) as crf:
        calls = spy_on(monkeypatch, "seginf_crf_marginals", 1, 3)
        out = np.empty((5, c))
        res = crf.marginals(x, out=out)
        assert res is out and np.allclose(out.sum(axis=1), 1.0)
        assert calls == [(x.ctypes.data, out.ctypes.data)]
        crf.marginals(x.astype(np.float64))  # a float64 input is converted: another buffer
        assert calls[1][0] != x.ctypes.data
        # Fortran order is copied to C order, with the same result
        np.testing.assert_array_equal(crf.marginals(np.asfortranarray(x)), out)

        b = seginf.IndexBuilder(crf)
        add_calls = spy_on(monkeypatch, "seginf_index_builder_add", 2, 4)
        for i, (fx, fy) in enumerate(random_sequences(rng, 3, c, d)):
            fy = fy.astype(np.uint32)
            b.add(i, fx, fy)
            assert add_calls[-1] == (fx.ctypes.data, fy.ctypes.data)
        with b.finish() as index, index.query() as q:
            calls = spy_on(monkeypatch, "seginf_query_scores", 1, 3, 6)
            scores = np.empty(q.num_items)
            assert q.scores(x, y, 0, 1, out=scores) is scores
            assert calls == [(x.ctypes.data, y.ctypes.data, scores.ctypes.data)]
            assert np.isfinite(scores).all()

        t = seginf.Trainer(crf)
        calls = spy_on(monkeypatch, "seginf_trainer_add", 1, 3)
        t.add(x, y)
        assert calls == [(x.ctypes.data, y.ctypes.data)]
        t.close()


def test_pyproject_version_matches_the_header():
    text = (REPO / "python" / "pyproject.toml").read_text()
    assert re.search(r'^version = "(.*)"$', text, re.MULTILINE).group(1) == ".".join(
        map(str, seginf.HEADER_VERSION)
    )


def test_seginf_amx_off_keeps_a_process_off_the_tiles():
    code = "import seginf; print(seginf.tiles_available())"
    env = dict(os.environ, SEGINF_AMX="off", PYTHONPATH=str(REPO / "python"))
    env.setdefault("SEGINF_LIB", str(seginf.library_path()))
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"
    # Without the switch: never on a CPU without AMX-INT8.
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if "amx_int8" not in flags.split():
        assert not seginf.tiles_available()
