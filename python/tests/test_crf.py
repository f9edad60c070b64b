"""Crf against brute-force enumeration of every labelling (C = 3, n = 4: 81 paths)."""

import json
import struct

import numpy as np
import pytest
from conftest import Enumerated, make_crf, random_params

import seginf

C, D, N = 3, 5, 4


@pytest.fixture(params=[True, False], ids=["b-s-e", "W-A-only"])
def case(request, rng):
    p = random_params(rng, C, D, with_optional=request.param)
    x = rng.normal(size=(N, D)).astype(np.float32)
    y = rng.integers(0, C, N)
    with make_crf(p) as crf:
        yield crf, p, x, y, Enumerated(crf.param_blocks(), x)


def test_params_round_trip(case):
    crf, p, *_ = case
    blocks = crf.param_blocks()
    np.testing.assert_array_equal(blocks["weight"], p["weights"].astype(np.float64))
    np.testing.assert_array_equal(blocks["transitions"], p["transitions"].astype(np.float64))
    for name in ("bias", "start", "end"):
        if name in p:
            np.testing.assert_array_equal(blocks[name], p[name].astype(np.float64))
        else:
            assert name not in blocks and crf.param_offset(name) is None
    assert crf.num_params == sum(v.size for v in blocks.values()) == crf.params().size
    assert (crf.num_labels, crf.feature_dim) == (C, D)


def test_log_partition_and_likelihood(case):
    crf, _, x, y, en = case
    assert crf.log_partition(x) == pytest.approx(en.log_z(), rel=1e-10)
    for k in (0, 17, 80, en.index_of(y)):
        assert crf.log_likelihood(x, en.paths[k]) == pytest.approx(en.scores[k] - en.log_z(), rel=1e-10)


def test_viterbi_is_the_argmax(case):
    crf, _, x, _, en = case
    labels, score = crf.viterbi(x)
    assert labels.dtype == np.uint32 and labels.shape == (N,)
    np.testing.assert_array_equal(labels, en.paths[np.argmax(en.scores)])
    assert score == pytest.approx(en.scores.max(), rel=1e-10)


def test_marginals(case):
    crf, _, x, _, en = case
    m = crf.marginals(x)
    assert m.shape == (N, C) and m.dtype == np.float64
    np.testing.assert_allclose(m.sum(axis=1), 1.0, rtol=1e-12)
    p = en.probs()
    want = np.array([[p[en.paths[:, t] == j].sum() for j in range(C)] for t in range(N)])
    np.testing.assert_allclose(m, want, rtol=1e-9, atol=1e-14)
    pair = crf.pairwise_marginals(x)
    assert pair.shape == (N - 1, C, C)
    want = np.array(
        [
            [[p[(en.paths[:, t - 1] == i) & (en.paths[:, t] == j)].sum() for j in range(C)] for i in range(C)]
            for t in range(1, N)
        ]
    )
    np.testing.assert_allclose(pair, want, rtol=1e-9, atol=1e-14)
    assert crf.pairwise_marginals(x[:1]).shape == (0, C, C)


@pytest.mark.parametrize("first,last", [(0, 0), (1, 2), (3, 3), (0, 3)])
def test_segment_loss_marginals_gradient(case, first, last):
    crf, _, x, y, en = case
    inside = en.outside_mask(y, first, last)
    i = en.index_of(y)
    # CL(a, b) = -log p(y_a..y_b | y outside, x)
    assert crf.segment_loss(x, y, first, last) == pytest.approx(-(en.scores[i] - en.log_z(inside)), rel=1e-9)
    q = en.probs(inside)
    want = np.array([[q[en.paths[:, t] == j].sum() for j in range(C)] for t in range(first, last + 1)])
    np.testing.assert_allclose(crf.segment_marginals(x, y, first, last), want, rtol=1e-9, atol=1e-14)
    onehot = np.eye(C)[y[first : last + 1]]
    np.testing.assert_allclose(
        crf.segment_error_vectors(x, y, first, last), want - onehot, rtol=1e-9, atol=1e-12
    )
    # dCL/dtheta = E_q[phi] - phi(y)
    grad = crf.segment_gradient(x, y, first, last)
    np.testing.assert_allclose(grad, q @ en.phi - en.phi[i], rtol=1e-8, atol=1e-10)


def test_whole_sequence_gradient_is_nll_gradient(case):
    crf, _, x, y, en = case
    g = crf.segment_gradient(x, y, 0, N - 1)
    np.testing.assert_allclose(g, en.probs() @ en.phi - en.phi[en.index_of(y)], rtol=1e-8, atol=1e-10)
    assert crf.segment_loss(x, y, 0, N - 1) == pytest.approx(-crf.log_likelihood(x, y), rel=1e-12)


NAMES = ["O", "B-PER", "I-PER"]


def test_constraint_mask_bio():
    trans, start, end = seginf.constraint_mask("bio", NAMES)
    # I-PER only after B-PER or I-PER, never first
    np.testing.assert_array_equal(trans[:, 2], [False, True, True])
    assert trans[:, :2].all()
    np.testing.assert_array_equal(start, [True, True, False])
    assert end.all()


def test_with_constraints(rng):
    p = random_params(rng, C, D, with_optional=False)
    x = rng.normal(size=(N, D)).astype(np.float32)
    with make_crf(p) as crf, crf.with_constraints(seginf.TagScheme.BIO, NAMES) as bio:
        assert bio.num_params == crf.num_params + C  # start added (BIO allows every end label)
        blocks = bio.param_blocks()
        assert "end" not in blocks
        assert blocks["transitions"][0, 2] == -np.inf and blocks["start"][2] == -np.inf
        assert bio.log_likelihood(x, [0, 2, 2, 0]) == -np.inf
        en = Enumerated(blocks, x)
        allowed = np.isfinite(en.scores)
        assert bio.log_partition(x) == pytest.approx(en.log_z(allowed), rel=1e-10)
        labels, _ = bio.viterbi(x)
        assert np.isfinite(en.scores[en.index_of(labels)])
        assert bio.segment_loss(x, [0, 2, 2, 0], 1, 1) == np.inf


def _write_safetensors(path, tensors):
    """A safetensors file by hand: u64 header length, JSON header, raw little-endian data."""
    header, blobs, offset = {}, [], 0
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        dtype = {np.dtype("<f4"): "F32", np.dtype("<f8"): "F64", np.dtype("<f2"): "F16"}[arr.dtype]
        header[name] = {
            "dtype": dtype,
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + arr.nbytes],
        }
        blobs.append(arr.tobytes())
        offset += arr.nbytes
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


def test_load_safetensors_default_names(tmp_path, rng):
    p = random_params(rng, C, D)
    f = tmp_path / "crf.safetensors"
    _write_safetensors(
        f,
        {
            "weight": p["weights"],
            "bias": p["bias"].astype(np.float64),
            "transitions": p["transitions"],
            "start_transitions": p["start"],
            "end_transitions": p["end"],
        },
    )
    with seginf.Crf.load_safetensors(f) as loaded, make_crf(p) as direct:
        np.testing.assert_array_equal(loaded.params(), direct.params())


def test_load_safetensors_custom_names_and_to_from(tmp_path, rng):
    p = random_params(rng, C, D)
    f = tmp_path / "flair.safetensors"
    _write_safetensors(
        f,
        {
            "linear.weight": p["weights"],
            "linear.bias": p["bias"],
            "trans": p["transitions"].T.copy(),
            "start_transitions": p["start"],
        },
    )
    with seginf.Crf.load_safetensors(
        f, weight="linear.weight", bias="linear.bias", transitions="trans", end="", transitions_to_from=True
    ) as crf:
        blocks = crf.param_blocks()
        np.testing.assert_array_equal(blocks["transitions"], p["transitions"])
        np.testing.assert_array_equal(blocks["bias"], p["bias"])
        assert "end" not in blocks and "start" in blocks
