"""Bad input raises SeginfError with the library's status name (from the library's own checks
or from the shape/dtype checks done before calling it); handles close safely."""

import numpy as np
import pytest
from conftest import make_crf, random_params, random_sequences

import seginf
from seginf import _lib

C, D = 3, 4


@pytest.fixture
def crf(rng):
    with make_crf(random_params(rng, C, D)) as c:
        yield c


@pytest.fixture
def index(crf, rng):
    b = seginf.IndexBuilder(crf)
    for i, (x, y) in enumerate(random_sequences(rng, 4, C, D)):
        b.add(i, x, y)
    with b.finish() as idx:
        yield idx


def raises(name, fn, *args, **kw):
    with pytest.raises(seginf.SeginfError) as e:
        fn(*args, **kw)
    assert e.value.name == "SEGINF_" + name, e.value
    assert e.value.status == seginf.Status[name] and e.value.message
    return e.value


X = np.ones((3, D), np.float32)
Y = np.array([0, 1, 2])


def test_feature_shapes_and_dtypes(crf):
    raises("ERR_DIMENSION_MISMATCH", crf.marginals, np.ones((3, D + 1), np.float32))
    raises("ERR_DIMENSION_MISMATCH", crf.marginals, np.ones(D, np.float32))
    raises("ERR_INVALID_ARGUMENT", crf.marginals, np.full((3, D), "a"))
    raises("ERR_INVALID_ARGUMENT", crf.marginals, np.ones((0, D), np.float32))  # the library's n = 0 check
    raises("ERR_DIMENSION_MISMATCH", seginf.Crf, np.ones((C, D)), np.ones((C, C + 1)))
    raises("ERR_DIMENSION_MISMATCH", seginf.Crf, np.ones((C, D)), np.ones((C, C)), bias=np.ones(C + 1))


def test_non_finite(crf, index):
    bad = X.copy()
    bad[1, 2] = np.nan
    e = raises("ERR_NON_FINITE", crf.marginals, bad)
    assert e.message == _lib.last_error_message()  # the library's message, read on this thread
    raises("ERR_NON_FINITE", crf.viterbi, np.nan_to_num(bad, nan=np.inf))
    raises("ERR_NON_FINITE", index.query().run, bad, Y, 0, 0)
    b = seginf.IndexBuilder(crf)
    raises("ERR_NON_FINITE", b.add, 0, bad, Y)
    assert b.num_tokens == 0
    b.close()
    t = seginf.Trainer(crf)
    raises("ERR_NON_FINITE", t.add, bad, Y)
    assert t.num_sequences == 0
    t.close()
    raises("ERR_NON_FINITE", seginf.Crf, np.full((C, D), np.nan), np.ones((C, C)))
    raises("ERR_NON_FINITE", seginf.Crf, np.ones((C, D)), np.full((C, C), np.inf))


def test_labels(crf, index):
    raises("ERR_LABEL_OUT_OF_RANGE", crf.log_likelihood, X, [0, 3, 1])  # the library's check
    raises("ERR_LABEL_OUT_OF_RANGE", crf.log_likelihood, X, [0, -1, 1])  # caught before uint32
    raises("ERR_LABEL_OUT_OF_RANGE", crf.log_likelihood, X, np.array([0, 2**33, 1]))
    raises("ERR_INVALID_ARGUMENT", crf.log_likelihood, X, [0.0, 1.0, 2.0])
    raises("ERR_DIMENSION_MISMATCH", crf.log_likelihood, X, [0, 1])
    raises("ERR_LABEL_OUT_OF_RANGE", index.query().scores, X, [0, 1, 7], 0, 0)
    raises("ERR_LABEL_OUT_OF_RANGE", index.query, label_filter=[5])
    b = seginf.IndexBuilder(crf)
    raises("ERR_LABEL_OUT_OF_RANGE", b.add, 0, X, [0, 9, 0])
    b.close()


def test_segments(crf, index):
    raises("ERR_BAD_SEGMENT", crf.segment_loss, X, Y, 2, 1)
    raises("ERR_BAD_SEGMENT", crf.segment_loss, X, Y, 0, 3)
    raises("ERR_BAD_SEGMENT", crf.segment_gradient, X, Y, 0, 3)
    raises("ERR_BAD_SEGMENT", crf.segment_marginals, X, Y, -1, 1)
    raises("ERR_BAD_SEGMENT", crf.segment_error_vectors, X, Y, 0, 10**15)  # checked before allocating
    with index.query() as q:
        raises("ERR_BAD_SEGMENT", q.run, X, Y, 1, 0)
        raises("ERR_BAD_SEGMENT", q.scores, X, Y, 0, 5)
        raises("ERR_INVALID_ARGUMENT", q.run, X, Y, 0, 0, k=0)
        raises("ERR_INVALID_ARGUMENT", q.run, X, Y, 0, 0, k=-1)
        sup, opp = q.run(X, Y, 0, 0, k=10**12)  # capped at the number of items, not allocated
        assert len(sup) == len(opp) == index.num_tokens
    raises("ERR_INVALID_ARGUMENT", index.token, index.num_tokens)
    assert index.token(0) == (0, 0, index.tokens()["label"][0])


def test_options(index):
    raises("ERR_INVALID_ARGUMENT", index.query, granularity="paragraph")
    raises("ERR_INVALID_ARGUMENT", index.query, granularity=99)  # the library's check
    raises("ERR_INVALID_ARGUMENT", index.query, damping=0.0)
    with index.query() as q:
        raises("ERR_INVALID_ARGUMENT", q.set_hessian, 1.0, mode="kfac")
        q.set_granularity("nearest_cosine")
        q.set_normalization("gradient_norm")
        raises("ERR_INVALID_ARGUMENT", q.run, X, Y, 0, 0)
        raises("ERR_INVALID_ARGUMENT", q.scores, X, Y, 0, 0, out=np.empty(index.num_tokens, np.float32))
        raises("ERR_DIMENSION_MISMATCH", q.scores, X, Y, 0, 0, out=np.empty(index.num_tokens + 1))


def test_builder_storage_option(crf):
    raises("ERR_INVALID_ARGUMENT", seginf.IndexBuilder, crf, storage="f8")
    raises("ERR_INVALID_ARGUMENT", seginf.IndexBuilder, crf, storage=7)


def test_files(crf, index, tmp_path):
    raises("ERR_IO", seginf.Index.open, tmp_path / "missing.index", crf)
    garbage = tmp_path / "garbage.index"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}" + b"x" * 40)
    raises("ERR_FORMAT", seginf.Index.open, garbage, crf)
    raises("ERR_IO", seginf.Crf.load_safetensors, tmp_path / "missing.safetensors")
    path = tmp_path / "ok.index"
    index.save(path)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # corrupt the last feature bytes: the checksum catches it
    path.write_bytes(bytes(data))
    raises("ERR_FORMAT", seginf.Index.open, path, crf)


def test_handles_close_and_reject_use_after_close(crf, rng):
    with make_crf(random_params(rng, C, D)) as c:
        assert not c.closed
    assert c.closed
    c.close()  # double close is a no-op
    raises("ERR_NULL_ARGUMENT", c.marginals, X)
    raises("ERR_NULL_ARGUMENT", lambda: c.num_labels)
    with pytest.raises(seginf.SeginfError), c:
        pass
    b = seginf.IndexBuilder(crf)
    raises("ERR_INVALID_ARGUMENT", b.finish)  # no tokens: the builder is consumed anyway
    assert b.closed
    raises("ERR_NULL_ARGUMENT", b.finish)
    b.close()


def test_children_outlive_their_parents(rng):
    crf = make_crf(random_params(rng, C, D))
    b = seginf.IndexBuilder(crf)
    b.add(0, X, Y)
    crf.close()  # the builder (and the index) hold their own reference
    index = b.finish()
    q = index.query()
    index.close()
    sup, opp = q.run(X, Y, 0, 0, k=2)
    assert len(sup) == len(opp) == 2 and (sup["doc_id"] == 0).all()
    q.close()
    del q  # __del__ after close is harmless
    b2 = seginf.IndexBuilder(make_crf(random_params(rng, C, D)))
    del b2  # freed by __del__ without close()


def test_constraints_errors(crf):
    raises("ERR_INVALID_ARGUMENT", crf.with_constraints, "bio", ["O", "B-PER", "X-PER"])
    raises("ERR_DIMENSION_MISMATCH", crf.with_constraints, "bio", ["O", "B-PER"])
    raises("ERR_INVALID_ARGUMENT", crf.with_constraints, "bio", "O B-PER I-PER")
