"""Trainer (stationarity of the objective, partial labels by enumeration, callbacks),
Curvature (save/open round trip) and exact_influence (against retraining done here)."""

import numpy as np
import pytest
from conftest import Enumerated, make_crf, random_params, random_sequences

import seginf

C, D, L2 = 3, 4, 0.05


@pytest.fixture
def data(rng):
    return random_sequences(rng, 10, C, D, lo=2, hi=5)


@pytest.fixture
def init(rng):
    with make_crf(random_params(rng, C, D)) as crf:
        yield crf


def trained_on(init, data, **kw):
    trainer = seginf.Trainer(init, l2=L2, tolerance=1e-9, **kw)
    for x, y in data:
        trainer.add(x, y)
    return trainer, trainer.run()


def test_run_reaches_a_stationary_point(init, data):
    trainer, crf = trained_on(init, data)
    with trainer, crf:
        assert trainer.num_sequences == len(data)
        theta = crf.params()
        grad = np.mean([crf.segment_gradient(x, y, 0, len(y) - 1) for x, y in data], axis=0) + L2 * theta
        assert np.abs(grad).max() < 1e-6
        objective, max_grad, iterations = trainer.last_run
        nll = np.mean([-crf.log_likelihood(x, y) for x, y in data])
        assert objective == pytest.approx(nll + L2 / 2 * theta @ theta, rel=1e-9)
        assert max_grad <= 1e-9 and iterations > 0


def test_partial_labels_marginalise_unlabelled_tokens(init, data):
    masks = [np.arange(len(y)) % 2 == 0 for _, y in data]  # every other token unlabelled
    trainer = seginf.Trainer(init, l2=L2, tolerance=1e-9)
    for (x, y), m in zip(data, masks):
        trainer.add(x, np.where(m, y, -1), observed=m)  # unlabelled tokens may hold any value
    with trainer, trainer.run() as crf:
        blocks, theta = crf.param_blocks(), crf.params()
        nll = []
        for (x, y), m in zip(data, masks):
            en = Enumerated(blocks, x)
            consistent = (en.paths[:, m] == y[m]).all(axis=1)
            nll.append(en.log_z() - en.log_z(consistent))  # -log sum_{y' agreeing on labelled} p(y'|x)
        assert trainer.last_run[0] == pytest.approx(np.mean(nll) + L2 / 2 * theta @ theta, rel=1e-9)


def test_all_observed_equals_no_mask(init, data):
    a, crf_a = trained_on(init, data)
    b = seginf.Trainer(init, l2=L2, tolerance=1e-9)
    for x, y in data:
        b.add(x, y, observed=np.ones(len(y), bool))
    with a, b, crf_a, b.run() as crf_b:
        np.testing.assert_array_equal(crf_a.params(), crf_b.params())


def test_progress_callback_cancel_and_exception(init, data):
    trainer = seginf.Trainer(init, l2=L2)
    for x, y in data:
        trainer.add(x, y)
    seen = []
    trainer.run(progress=lambda it, obj, g: seen.append((it, obj, g))).close()
    assert [s[0] for s in seen] == list(range(1, len(seen) + 1)) and len(seen) == trainer.last_run[2]
    assert seen[-1][1] == pytest.approx(trainer.last_run[0])
    assert all(b[1] <= a[1] + 1e-12 for a, b in zip(seen, seen[1:]))  # L-BFGS with line search descends
    with pytest.raises(seginf.SeginfError) as e:
        trainer.run(progress=lambda it, obj, g: it >= 2)
    assert e.value.name == "SEGINF_ERR_CANCELLED"

    def boom(*_):
        raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        trainer.run(progress=boom)
    trainer.set_max_iterations(0)
    with pytest.raises(seginf.SeginfError) as e:
        trainer.run()
    assert e.value.name == "SEGINF_ERR_NOT_CONVERGED"
    trainer.close()


@pytest.mark.parametrize(
    "mode,expected", [("kfac", seginf.Hessian.KFAC), (seginf.Hessian.EKFAC, seginf.Hessian.EKFAC)]
)
def test_curvature_save_open_same_scores(init, data, tmp_path, mode, expected, rng):
    trainer, crf = trained_on(init, data)
    builder = seginf.IndexBuilder(crf)
    for i, (x, y) in enumerate(data):
        builder.add(i, x, y)
    tx, ty = rng.normal(size=(4, D)).astype(np.float32), rng.integers(0, C, 4)
    with (
        trainer,
        crf,
        builder.finish() as index,
        seginf.Curvature.fit(trainer, crf, mode, damping=0.01) as curv,
    ):
        assert curv.mode == expected
        path = tmp_path / "curvature.safetensors"
        curv.save(path)
        with (
            seginf.Curvature.open(path, crf) as reopened,
            index.query(curvature=curv) as q1,
            index.query(curvature=reopened) as q2,
        ):
            s1 = q1.scores(tx, ty, 1, 2)
            np.testing.assert_array_equal(q2.scores(tx, ty, 1, 2), s1)
            with index.query() as q_id:
                assert not np.allclose(q_id.scores(tx, ty, 1, 2), s1)  # the curvature is used


def test_exact_influence_against_retraining(init, data, rng):
    trainer, crf = trained_on(init, data)
    tx, ty = rng.normal(size=(3, D)).astype(np.float32), rng.integers(0, C, 3)
    seq, first, last = 4, 0, 1
    with trainer, crf:
        actual, predicted = seginf.exact_influence(trainer, crf, seq, first, last, tx, ty, 0, 2)
        # identity Hessian, damping 1: predicted = (1/S) g_test . g_train
        g_test = crf.segment_gradient(tx, ty, 0, 2)
        g_train = crf.segment_gradient(*data[seq], first, last)
        assert predicted == pytest.approx(g_test @ g_train / len(data), rel=1e-9)
        # retrain here with that segment unlabelled, warm-started from crf
        again = seginf.Trainer(crf, l2=L2, tolerance=1e-9)
        for i, (x, y) in enumerate(data):
            m = np.ones(len(y), bool)
            if i == seq:
                m[first : last + 1] = False
            again.add(x, y, observed=m)
        with again, again.run() as retrained:
            want = retrained.segment_loss(tx, ty, 0, 2) - crf.segment_loss(tx, ty, 0, 2)
        assert actual == pytest.approx(want, rel=1e-5, abs=1e-9)


def test_exact_influence_reports_and_cancels_its_retraining(init, data, rng):
    trainer, crf = trained_on(init, data)
    tx, ty = rng.normal(size=(3, D)).astype(np.float32), rng.integers(0, C, 3)
    with trainer, crf:
        plain = seginf.exact_influence(trainer, crf, 4, 0, 1, tx, ty, 0, 2)
        seen = []
        reported = seginf.exact_influence(
            trainer, crf, 4, 0, 1, tx, ty, 0, 2, progress=lambda *step: seen.append(step)
        )
        assert reported == plain and len(seen) >= 1
        assert [s[0] for s in seen] == list(range(1, len(seen) + 1))
        with pytest.raises(seginf.SeginfError) as e:
            seginf.exact_influence(trainer, crf, 4, 0, 1, tx, ty, 0, 2, progress=lambda *s: True)
        assert e.value.name == "SEGINF_ERR_CANCELLED"
        # The callback was the call's only: a later run reports nothing.
        assert seginf.exact_influence(trainer, crf, 4, 0, 1, tx, ty, 0, 2) == plain


def test_exact_curvature_matches_exact_influence(init, data, rng, tmp_path):
    trainer, crf = trained_on(init, data)
    builder = seginf.IndexBuilder(crf)
    for i, (x, y) in enumerate(data):
        builder.add(i, x, y)
    tx, ty = rng.normal(size=(3, D)).astype(np.float32), rng.integers(0, C, 3)
    with (
        trainer,
        crf,
        builder.finish() as index,
        seginf.Curvature.fit(trainer, crf, "exact", damping=0.0) as curv,
    ):
        with index.query(curvature=curv) as q:
            scores = q.scores(tx, ty, 1, 1)
        iterations, residual = curv.last_solve()
        assert iterations > 0 and residual <= 1e-8
        toks = index.tokens()
        k = int(np.flatnonzero((toks["doc_id"] == 2) & (toks["position"] == 1))[0])
        _, predicted = seginf.exact_influence(trainer, crf, 2, 1, 1, tx, ty, 1, 1, curvature=curv)
        # the header: a query token's score with the same curvature is -S * predicted
        assert scores[k] == pytest.approx(-len(data) * predicted, rel=1e-6)
        with pytest.raises(seginf.SeginfError) as e:
            curv.save(tmp_path / "exact.safetensors")
        assert e.value.name == "SEGINF_ERR_UNSUPPORTED"
