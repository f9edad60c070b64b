"""Query.rank_training against what the other calls give: index token stats and likelihoods
for the baselines, per-clean-token query score vectors for segment influence, and a NumPy
per-document mean/max for the document ranking."""

import numpy as np
import pytest
from conftest import make_crf, random_params, random_sequences

import seginf

C, D = 3, 5


@pytest.fixture
def setup(rng):
    crf = make_crf(random_params(rng, C, D))
    train = random_sequences(rng, 8, C, D)
    clean = random_sequences(rng, 3, C, D)
    doc_ids = [(i // 3) << 32 | i % 3 for i in range(len(train))]  # document << 32 | sentence
    b = seginf.IndexBuilder(crf)
    for doc, (x, y) in zip(doc_ids, train):
        b.add(doc, x, y)
    index = b.finish()
    yield crf, index, train, clean, doc_ids
    index.close()
    crf.close()


def test_baselines_equal_index_stats_and_likelihoods(setup):
    crf, index, train, _, _ = setup
    lengths = [len(y) for _, y in train]
    with index.query() as q:
        for method, stat in (
            ("token_loss", "loss"),
            ("token_entropy", "entropy"),
            ("token_gradient_norm", "grad_norm"),
        ):
            scores, _ = q.rank_training(method)
            np.testing.assert_allclose(scores, index.token_stats(stat), rtol=1e-9)
        scores, _ = q.rank_training(seginf.RankMethod.TOKEN_MARGINAL_LOSS)
        want = np.concatenate([-np.log(crf.marginals(x)[np.arange(len(y)), y]) for x, y in train])
        np.testing.assert_allclose(scores, want, rtol=1e-9)
        scores, _ = q.rank_training("instance_loss")
        want = np.repeat([-crf.log_likelihood(x, y) for x, y in train], lengths)
        np.testing.assert_allclose(scores, want, rtol=1e-9)


@pytest.mark.parametrize("top", [1, 4, 1000])
def test_segment_influence_is_the_mean_of_the_top_clean_scores(setup, top):
    _, index, _, clean, _ = setup
    with index.query() as q:
        per_clean = np.array([q.scores(x, y, t, t) for x, y in clean for t in range(len(y))])
        want = np.sort(per_clean, axis=0)[::-1][:top].mean(axis=0)
        scores, _ = q.rank_training("segment_influence", clean=clean, top=top)
        np.testing.assert_allclose(scores, want, rtol=1e-9, atol=1e-12)


def test_instance_influence_is_the_mean_over_clean_sequences(setup):
    _, index, train, clean, _ = setup
    with index.query(granularity="instance") as qi, index.query() as q:
        per_clean = np.array([qi.scores(x, y, 0, len(y) - 1) for x, y in clean])
        scores, docs = q.rank_training("instance_influence", clean=clean)
        assert docs["items"].sum() == len(train)  # per-sequence: documents count sequences
        want = np.repeat(per_clean.mean(axis=0), [len(y) for _, y in train])
        np.testing.assert_allclose(scores, want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("shift", [0, 32])
def test_documents_aggregate_by_shifted_doc_id(setup, shift):
    _, index, _, _, _ = setup
    toks = index.tokens()
    with index.query() as q:
        scores, docs = q.rank_training("token_loss", doc_id_shift=shift)
    keys = toks["doc_id"] >> np.uint64(shift)
    assert docs.dtype == seginf.DOC_SCORE_DTYPE and len(docs) == index.num_documents(shift) == len(set(keys))
    for doc in docs:
        mine = scores[keys == doc["doc_id"]]
        assert doc["items"] == len(mine)
        assert doc["mean"] == pytest.approx(mine.mean(), rel=1e-12) and doc["max"] == mine.max()
    assert (np.diff(docs["mean"]) <= 0).all()  # most suspect first


def test_rank_errors(setup):
    _, index, _, clean, _ = setup
    with index.query() as q:
        for name, kwargs in (
            ("ERR_INVALID_ARGUMENT", {"method": "segment_influence"}),  # needs a clean set
            ("ERR_INVALID_ARGUMENT", {"method": "token_loss", "top": 0}),
            ("ERR_INVALID_ARGUMENT", {"method": "token_loss", "doc_id_shift": 64}),
            ("ERR_INVALID_ARGUMENT", {"method": "shouting"}),
        ):
            with pytest.raises(seginf.SeginfError) as e:
                q.rank_training(**kwargs)
            assert e.value.name == "SEGINF_" + name
        q.set_excluded_docs([0])
        with pytest.raises(seginf.SeginfError) as e:
            q.rank_training("token_loss")  # filters must be unset
        assert e.value.name == "SEGINF_ERR_INVALID_ARGUMENT"
        q.set_excluded_docs(None)
        bad = [(clean[0][0], np.full(len(clean[0][1]), C))]
        with pytest.raises(seginf.SeginfError) as e:
            q.rank_training("segment_influence", clean=bad)
        assert e.value.name == "SEGINF_ERR_LABEL_OUT_OF_RANGE"
