"""Index and Query against dense gradients: with H = damping * I, a training token's score is
-g_test . g_train / damping, g from Crf.segment_gradient (DESIGN.md section 3)."""

import numpy as np
import pytest
from conftest import make_crf, random_params, random_sequences

import seginf

C, D = 4, 6
DAMPING = 2.0


@pytest.fixture
def setup(rng):
    p = random_params(rng, C, D)
    train = random_sequences(rng, 9, C, D)
    test_x = rng.normal(size=(5, D)).astype(np.float32)
    test_y = rng.integers(0, C, 5)
    crf = make_crf(p)
    builder = seginf.IndexBuilder(crf)
    doc_ids = [100 + 7 * i for i in range(len(train))]
    for doc, (x, y) in zip(doc_ids, train):
        builder.add(doc, x, y)
    index = builder.finish()
    yield crf, index, train, doc_ids, test_x, test_y
    index.close()
    crf.close()


def token_gradients(crf, train):
    return np.array([crf.segment_gradient(x, y, k, k) for x, y in train for k in range(len(y))])


def test_index_tokens_and_stats(setup):
    crf, index, train, doc_ids, *_ = setup
    n = sum(len(y) for _, y in train)
    assert (index.num_tokens, index.num_sequences, index.storage) == (n, len(train), seginf.Storage.F32)
    toks = index.tokens()
    np.testing.assert_array_equal(toks["doc_id"], np.repeat(doc_ids, [len(y) for _, y in train]))
    np.testing.assert_array_equal(toks["position"], np.concatenate([np.arange(len(y)) for _, y in train]))
    np.testing.assert_array_equal(toks["label"], np.concatenate([y for _, y in train]))
    losses = [crf.segment_loss(x, y, k, k) for x, y in train for k in range(len(y))]
    np.testing.assert_allclose(index.token_stats("loss"), losses, rtol=1e-9)
    np.testing.assert_allclose(
        index.token_stats(seginf.TokenStat.GRAD_NORM),
        np.linalg.norm(token_gradients(crf, train), axis=1),
        rtol=1e-9,
    )
    marg = np.concatenate([crf.marginals(x) for x, _ in train])
    np.testing.assert_allclose(index.token_stats("entropy"), -(marg * np.log(marg)).sum(axis=1), rtol=1e-9)


@pytest.mark.parametrize("first,last", [(2, 2), (1, 3)])
def test_token_scores_equal_dense_gradients(setup, first, last):
    crf, index, train, _, tx, ty = setup
    g_test = crf.segment_gradient(tx, ty, first, last)
    g_train = token_gradients(crf, train)
    want = -(g_train @ g_test) / DAMPING
    with index.query(damping=DAMPING) as q:
        assert q.num_items == index.num_tokens
        np.testing.assert_allclose(q.scores(tx, ty, first, last), want, rtol=1e-6)
    with index.query(damping=DAMPING, normalization="gradient_norm") as q:
        np.testing.assert_allclose(
            q.scores(tx, ty, first, last), want / np.linalg.norm(g_train, axis=1), rtol=1e-6
        )


def test_instance_scores_equal_sequence_gradients(setup):
    crf, index, train, _, tx, ty = setup
    g_test = crf.segment_gradient(tx, ty, 0, 4)
    g_seq = np.array([crf.segment_gradient(x, y, 0, len(y) - 1) for x, y in train])
    with index.query(granularity="instance") as q:
        assert q.num_items == len(train)
        np.testing.assert_allclose(q.scores(tx, ty, 0, 4), -(g_seq @ g_test), rtol=1e-6)


def _ranked(scores, toks, k, sign):
    """Indices of the top k of sign*scores (descending), ties by (doc_id, position)."""
    order = np.lexsort((toks["position"], toks["doc_id"], sign * -scores))
    return order[:k]


def test_run_top_k_equals_sorted_scores(setup):
    _, index, _, _, tx, ty = setup
    toks = index.tokens()
    with index.query() as q:
        scores = q.scores(tx, ty, 1, 2)
        sup, opp = q.run(tx, ty, 1, 2, k=7)
    assert sup.dtype == seginf.HIT_DTYPE and len(sup) == len(opp) == 7
    for hits, sign in ((sup, -1), (opp, 1)):
        want = _ranked(scores, toks, 7, sign)
        np.testing.assert_array_equal(hits["doc_id"], toks["doc_id"][want])
        np.testing.assert_array_equal(hits["position"], toks["position"][want])
        np.testing.assert_array_equal(hits["label"], toks["label"][want])
        np.testing.assert_array_equal(hits["score"], scores[want])
    assert (sup["score"] < 0).all() and (opp["score"] > 0).all()  # the extremes of a mixed-sign set


def test_filters(setup):
    _, index, _, doc_ids, tx, ty = setup
    toks = index.tokens()
    with index.query(label_filter=[1, 3], excluded_docs=[doc_ids[0], doc_ids[4]]) as q:
        scores = q.scores(tx, ty, 0, 0)
        kept = np.isin(toks["label"], [1, 3]) & ~np.isin(toks["doc_id"], [doc_ids[0], doc_ids[4]])
        assert np.isnan(scores[~kept]).all() and np.isfinite(scores[kept]).all()
        sup, opp = q.run(tx, ty, 0, 0, k=1000)
        assert len(sup) == len(opp) == kept.sum()
        assert set(sup["label"]) <= {1, 3} and not set(sup["doc_id"]) & {doc_ids[0], doc_ids[4]}
        q.set_label_filter(None)
        q.set_excluded_docs(None)
        assert np.isfinite(q.scores(tx, ty, 0, 0)).all()


def test_run_batch_equals_run(setup, rng):
    _, index, _, _, tx, ty = setup
    x2 = rng.normal(size=(3, D)).astype(np.float32)
    y2 = rng.integers(0, C, 3)
    feats, labels, lengths = seginf.concat_sequences([(tx, ty), (x2, y2)])
    segments = [(0, 1, 2), (1, 0, 2), (0, 4, 4)]
    with index.query(normalization="gradient_norm") as q:
        batch = q.run_batch(feats, labels, lengths, segments, k=5)
        assert len(batch) == 3
        for (s, first, last), (sup, opp) in zip(segments, batch):
            x, y = ((tx, ty), (x2, y2))[s]
            want_sup, want_opp = q.run(x, y, first, last, k=5)
            np.testing.assert_array_equal(sup, want_sup)
            np.testing.assert_array_equal(opp, want_opp)


def test_batch_with_and_without_the_ranking_copy(setup, rng):
    _, index, _, _, tx, ty = setup
    # Eight single-token segments: more than 4 test columns, so the batch GEMM path.
    segments = [(0, i % len(ty), i % len(ty)) for i in range(8)]
    feats, labels, lengths = seginf.concat_sequences([(tx, ty)])
    with index.query() as q:
        with_copy = q.run_batch(feats, labels, lengths, segments, k=5)
        copy_bytes = index.ranking_copy_bytes
        q.set_ranking_copy(False)
        without = q.run_batch(feats, labels, lengths, segments, k=5)
    # Built by the first batch on CPUs with the integer kernels: 2*d + 4 bytes per token.
    assert copy_bytes in (0, (2 * D + 4) * index.num_tokens)
    for (a_sup, a_opp), (b_sup, b_opp) in zip(with_copy, without):
        np.testing.assert_array_equal(a_sup, b_sup)
        np.testing.assert_array_equal(a_opp, b_opp)


def test_save_open_gives_identical_scores(setup, tmp_path, rng):
    crf, index, _, _, tx, ty = setup
    path = tmp_path / "train.index"
    index.save(path)
    with index.query() as q:
        before = q.scores(tx, ty, 0, 3)
        before_hits = q.run(tx, ty, 0, 3, k=4)
    with seginf.Index.open(path, crf) as reopened, reopened.query() as q:
        assert reopened.num_tokens == index.num_tokens
        np.testing.assert_array_equal(q.scores(tx, ty, 0, 3), before)
        for got, want in zip(q.run(tx, ty, 0, 3, k=4), before_hits):
            np.testing.assert_array_equal(got, want)
    with make_crf(random_params(rng, C, D)) as other:
        with pytest.raises(seginf.SeginfError) as e:
            seginf.Index.open(path, other)
        assert e.value.name == "SEGINF_ERR_MODEL_MISMATCH"


@pytest.mark.parametrize(
    "storage,expected", [("f16", seginf.Storage.F16), (seginf.Storage.INT8, seginf.Storage.INT8)]
)
def test_compressed_storage_close_to_f32(setup, storage, expected):
    crf, index, train, doc_ids, tx, ty = setup
    b = seginf.IndexBuilder(crf, storage=storage)
    for doc, (x, y) in zip(doc_ids, train):
        b.add(doc, x, y)
    with b.finish() as small, small.query() as q, index.query() as q32:
        assert small.storage == expected
        exact = q32.scores(tx, ty, 1, 1)
        np.testing.assert_allclose(q.scores(tx, ty, 1, 1), exact, rtol=0, atol=0.02 * np.abs(exact).max())


def test_add_batch_equals_add(setup):
    crf, index, train, doc_ids, tx, ty = setup
    feats, labels, lengths = seginf.concat_sequences(train)
    b = seginf.IndexBuilder(crf, expected_tokens=len(labels))
    b.add_batch(doc_ids, feats, labels, lengths)
    assert b.num_tokens == len(labels)
    with b.finish() as batch_index, batch_index.query() as q, index.query() as q0:
        np.testing.assert_array_equal(q.scores(tx, ty, 2, 3), q0.scores(tx, ty, 2, 3))


def test_builder_progress_and_cancel(setup):
    crf, _, train, _, _, _ = setup
    seen = []
    b = seginf.IndexBuilder(crf, expected_tokens=99, progress=lambda done, total: seen.append((done, total)))
    b.add(1, *train[0])
    b.add(2, *train[1])
    assert seen == [(len(train[0][1]), 99), (len(train[0][1]) + len(train[1][1]), 99)]
    b.close()
    b = seginf.IndexBuilder(crf, progress=lambda done, total: True)
    with pytest.raises(seginf.SeginfError) as e:
        b.add(1, *train[0])
    assert e.value.name == "SEGINF_ERR_CANCELLED" and b.num_tokens == 0

    def boom(done, total):
        raise KeyError("from the callback")

    b = seginf.IndexBuilder(crf, progress=boom)
    with pytest.raises(KeyError, match="from the callback"):
        b.add(1, *train[0])
    assert b.num_tokens == 0
    b.close()
