"""Differential privacy for statistics that leave a device ("Analyze Gauss").

A device that shares its ridge statistics shares sums over its samples. To make what it sends
(ε, δ)-differentially private with respect to adding or removing any one of its samples:

1. each feature row ``h`` is clipped to L2 norm ``clip``, so ``x = [h, 1]`` has
   ``‖x‖² ≤ clip² + 1`` and its ±1 targets ``t`` over the fleet's fixed ``labels`` have
   ``‖t‖² = c``. What is released is the upper triangle of ``G = Σ x xᵀ`` and all of
   ``B = Σ x tᵀ``; one sample changes that vector by at most
   ``Δ = √(‖x‖⁴ + c‖x‖²) ≤ √((clip² + 1)² + c(clip² + 1))`` in L2 norm;
2. Gaussian noise of standard deviation σ is added to each released entry (G's mirrored
   below its diagonal). σ is the smallest that makes the Gaussian mechanism (ε, δ)-DP for L2
   sensitivity Δ, by the analytic calibration of Balle & Wang (ICML 2018), which holds for
   every ε > 0 (the classic ``σ = Δ√(2 ln(1.25/δ))/ε`` holds only for ε < 1 and is looser).

Everything else is computed from the noisy G and B (post-processing, no further cost): the
sample count ``n = G[bias, bias]``, the per-label counts ``n_k = (B[bias, k] + n)/2`` and
``Σ‖t‖² = n·c``. Every sample is released
once (a device sends only samples the server has not acknowledged, and resends a lost release
unchanged), so the guarantee per sample is (ε, δ) for the whole federation (parallel
composition over disjoint samples). The label set must be fixed and public beforehand: a label
that appears would itself reveal a sample. λ absorbs the noise: the server's GCV sees it.
"""

from __future__ import annotations

import math

import numpy as np

from ._core import Statistics


def lambda_grid(noise_sd: float = 0.0, dim: int = 0) -> list[float]:
    """λ values for GCV on statistics with Gaussian noise of standard deviation ``noise_sd``
    per entry (the devices' σ added in quadrature) on a (dim + 1)² G: 10⁻³ … 10⁸ in
    half-decades, from 2·noise_sd·√(dim + 1) up. Below that edge of the noise's spectrum (a
    symmetric Gaussian matrix's eigenvalues reach ±2σ√p) ``G + λI`` may be indefinite or close
    to it, and GCV, which does not know about the noise, can pick such a λ (measured: one draw
    in three at ε = 1 fell to 0.35 accuracy). The floor depends only on σ, which is public: no
    privacy is spent on it."""
    floor = 2.0 * noise_sd * math.sqrt(dim + 1)
    grid = [10 ** (e / 2) for e in range(-6, 17)]
    kept = [lam for lam in grid if lam >= floor]
    return kept or [floor * 10 ** (e / 2) for e in range(0, 5)]


def _phi(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def analytic_gaussian_sigma(epsilon: float, delta: float, sensitivity: float) -> float:
    """The smallest σ for which adding N(0, σ²) to a query of L2 sensitivity ``sensitivity``
    is (ε, δ)-DP (Balle & Wang 2018, Theorem 8: the exact condition, solved by bisection)."""
    if not (epsilon > 0 and 0 < delta < 1 and sensitivity > 0):
        raise ValueError("need ε > 0, 0 < δ < 1 and a positive sensitivity")

    def delta_of(sigma: float) -> float:
        a = sensitivity / (2 * sigma)
        b = epsilon * sigma / sensitivity
        # exp(ε)·Φ(−a − b) can overflow as exp(ε) grows: compute it in logs.
        tail = _phi(-a - b)
        second = math.exp(epsilon + math.log(tail)) if tail > 0 else 0.0
        return _phi(a - b) - second

    lo, hi = 1e-12, sensitivity
    while delta_of(hi) > delta:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if delta_of(mid) > delta:
            lo = mid
        else:
            hi = mid
    return hi


class Privacy:
    """(ε, δ) differential privacy for one release of a device's statistics."""

    def __init__(self, epsilon: float, delta: float, clip: float, labels):
        if not clip > 0:
            raise ValueError("clip must be positive")
        self.epsilon = float(epsilon)
        self.delta = float(delta)
        self.clip_norm = float(clip)
        self.labels = [str(label) for label in labels]
        if not self.labels or len(set(self.labels)) != len(self.labels):
            raise ValueError("private statistics need the fleet's labels, each named once")
        row = self.clip_norm**2 + 1.0  # ‖x‖² at most
        self.sensitivity = math.sqrt(row * row + len(self.labels) * row)
        self.sigma = analytic_gaussian_sigma(self.epsilon, self.delta, self.sensitivity)

    def clip(self, features: np.ndarray) -> np.ndarray:
        """Rows scaled down to L2 norm ``clip`` (rows within it unchanged)."""
        x = np.asarray(features, dtype=np.float64)
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        return x * np.minimum(1.0, self.clip_norm / np.maximum(norms, 1e-300))

    def noisy(self, stats: Statistics, seed=None) -> Statistics:
        """The released statistics: ``stats`` (of clipped rows) with the label columns in the
        fleet's order and Gaussian noise added (see the module docs)."""
        unknown = set(stats.labels) - set(self.labels)
        if unknown:
            raise ValueError(f"labels outside the fleet's fixed set: {sorted(unknown)}")
        rng = np.random.default_rng(seed)
        gram = stats.gram()
        p = gram.shape[0]
        cross = stats.cross()
        # A label the device has no sample of has t = -1 for all its samples: B's column is -Σx.
        columns = {label: k for k, label in enumerate(stats.labels)}
        b = np.stack(
            [cross[:, columns[label]] if label in columns else -gram[:, p - 1]
             for label in self.labels],
            axis=1,
        )
        noise = rng.normal(0.0, self.sigma, size=(p, p))
        gram = gram + np.triu(noise) + np.triu(noise, 1).T
        b = b + rng.normal(0.0, self.sigma, size=b.shape)
        n = gram[p - 1, p - 1]
        target_sq = n * len(self.labels)
        counts = (b[p - 1, :] + n) / 2.0
        return Statistics.from_arrays(gram, b, self.labels, float(n), float(target_sq),
                                      [float(v) for v in counts])

    def describe(self) -> dict:
        return {
            "epsilon": self.epsilon,
            "delta": self.delta,
            "clip": self.clip_norm,
            "sensitivity": self.sensitivity,
            "sigma": self.sigma,
            "mechanism": "analytic Gaussian on the upper triangle of G and on B, x = [clip(h), 1]",
        }
