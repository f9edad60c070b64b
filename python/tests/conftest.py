"""Shared fixtures: small random CRFs and training sets, and brute-force CRF oracles in NumPy.

The package is imported from python/ (no install needed); the library from $SEGINF_LIB or the
repository's target/ directory (see seginf._lib).
"""

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import seginf

REPO = Path(__file__).resolve().parents[2]


def random_params(rng, c, d, with_optional=True):
    """float32 W, A and (optionally) b, s, e of a CRF, as keyword arguments of seginf.Crf."""
    p = {
        "weights": rng.normal(size=(c, d)).astype(np.float32),
        "transitions": rng.normal(size=(c, c)).astype(np.float32),
    }
    if with_optional:
        for name in ("bias", "start", "end"):
            p[name] = rng.normal(size=c).astype(np.float32)
    return p


def make_crf(p):
    return seginf.Crf(
        p["weights"], p["transitions"], bias=p.get("bias"), start=p.get("start"), end=p.get("end")
    )


def random_sequences(rng, count, c, d, lo=2, hi=7):
    """``count`` (features float32 (n, d), labels int64 (n,)) pairs with random lengths."""
    out = []
    for _ in range(count):
        n = int(rng.integers(lo, hi))
        out.append((rng.normal(size=(n, d)).astype(np.float32), rng.integers(0, c, n)))
    return out


class Enumerated:
    """Every labelling of one sequence under a CRF given by its float64 parameter blocks:
    path scores S(y) and the feature vector phi(y) (dS/dtheta, in seginf's parameter order)."""

    def __init__(self, blocks, x):
        x = np.asarray(x, dtype=np.float64)
        w, a = blocks["weight"], blocks["transitions"]
        c, d = w.shape
        n = x.shape[0]
        self.paths = np.array(list(itertools.product(range(c), repeat=n)))
        b, s, e = (blocks.get(k, np.zeros(c)) for k in ("bias", "start", "end"))
        u = x @ w.T + b
        t = np.arange(n)
        self.scores = np.array(
            [
                s[y[0]] + u[t, y].sum() + sum(a[y[i - 1], y[i]] for i in range(1, n)) + e[y[-1]]
                for y in self.paths
            ]
        )
        feats = []
        for y in self.paths:
            parts = []
            gw = np.zeros((c, d))
            for i in range(n):
                gw[y[i]] += x[i]
            parts.append(gw.ravel())
            if "bias" in blocks:
                parts.append(np.bincount(y, minlength=c).astype(float))
            ga = np.zeros((c, c))
            for i in range(1, n):
                ga[y[i - 1], y[i]] += 1
            parts.append(ga.ravel())
            if "start" in blocks:
                parts.append(np.eye(c)[y[0]])
            if "end" in blocks:
                parts.append(np.eye(c)[y[-1]])
            feats.append(np.concatenate(parts))
        self.phi = np.array(feats)

    def log_z(self, mask=None):
        s = self.scores if mask is None else self.scores[mask]
        m = s.max()
        return m + np.log(np.exp(s - m).sum())

    def probs(self, mask=None):
        s = np.where(np.ones(len(self.scores), bool) if mask is None else mask, self.scores, -np.inf)
        p = np.exp(s - s.max())
        return p / p.sum()

    def index_of(self, y):
        return int(np.flatnonzero((self.paths == np.asarray(y)).all(axis=1))[0])

    def outside_mask(self, y, first, last):
        """Labellings that agree with y outside [first, last]."""
        keep = np.ones(self.paths.shape[1], bool)
        keep[first : last + 1] = False
        return (self.paths[:, keep] == np.asarray(y)[keep]).all(axis=1)


@pytest.fixture
def rng():
    return np.random.default_rng(20221207)
