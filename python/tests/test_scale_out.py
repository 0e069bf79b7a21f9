"""What the fleet and cluster integrations build on: statistics out of and into a state, a head
imported from elsewhere, statistics rebuilt from arrays, and the differential-privacy release
(its σ checked against SciPy's normal distribution, independently of the code's own)."""

import math

import numpy as np
import pytest
from scipy.stats import norm

import fastretrain
from fastretrain.privacy import Privacy, analytic_gaussian_sigma, lambda_grid

from conftest import MODEL, TEST, TRAIN


def test_statistics_travel_between_states_and_a_head_can_be_imported():
    a = fastretrain.Retrainer(model=str(MODEL), threads=1)
    a.learn(str(TRAIN), limit=120)
    stats = a.to_statistics()
    assert stats.samples == 120
    # Merged into an empty state: the same statistics, so the same GCV head.
    b = fastretrain.Retrainer(model=str(MODEL), threads=1)
    b.merge_statistics(stats)
    assert b.statistics_digest == a.statistics_digest
    wa, lam_a = a.head()
    wb, lam_b = b.head()
    assert lam_a == lam_b and np.array_equal(wa, wb) and a.labels == b.labels
    assert a.fingerprint == b.fingerprint and a.fingerprint["feature_dim"] == 1920

    # A head solved elsewhere (here: NumPy on the statistics) drives predictions.
    g, cross = stats.gram(), stats.cross()
    w = np.linalg.solve(g + 10.0 * np.eye(len(g)), cross)
    c = fastretrain.Retrainer(model=str(MODEL), threads=1)
    c.set_head(w, stats.labels, 10.0, samples=120)
    features = c.features(str(TEST), limit=20).astype(np.float64)
    assert np.allclose(c.scores(str(TEST), limit=20), features @ w[:-1] + w[-1], atol=1e-4)
    assert c.labels == stats.labels
    for bad in (w[:-1], w[:, :-1]):
        with pytest.raises(ValueError):
            c.set_head(bad, stats.labels, 10.0)
    with pytest.raises(ValueError):
        c.set_head(np.full_like(w, np.nan), stats.labels, 10.0)
    with pytest.raises(ValueError):
        c.set_head(w, ["a"] * len(stats.labels), 10.0)


def test_statistics_from_arrays_round_trip_and_checks():
    rng = np.random.default_rng(3)
    s = fastretrain.Statistics(5)
    s.accumulate(rng.normal(size=(40, 5)), [["x", "y", "z"][i % 3] for i in range(40)])
    t = fastretrain.Statistics.from_arrays(s.gram(), s.cross(), s.labels, s.samples,
                                          s.target_sq, s.class_counts)
    assert t.to_bytes() == s.to_bytes()
    with pytest.raises(ValueError):
        fastretrain.Statistics.from_arrays(s.gram()[:, :-1], s.cross(), s.labels, 40.0, 120.0,
                                          s.class_counts)
    with pytest.raises(ValueError):
        fastretrain.Statistics.from_arrays(s.gram(), s.cross(), ["x", "x", "z"], 40.0, 120.0,
                                          s.class_counts)
    bad = s.gram()
    bad[2, 1] = np.inf
    with pytest.raises(ValueError):
        fastretrain.Statistics.from_arrays(bad, s.cross(), s.labels, 40.0, 120.0, s.class_counts)


@pytest.mark.parametrize("epsilon,delta,sensitivity", [(0.5, 1e-5, 3.0), (1.0, 1e-5, 70.0),
                                                       (8.0, 1e-6, 12.0)])
def test_analytic_gaussian_sigma_meets_delta_exactly(epsilon, delta, sensitivity):
    sigma = analytic_gaussian_sigma(epsilon, delta, sensitivity)
    a, b = sensitivity / (2 * sigma), epsilon * sigma / sensitivity
    achieved = norm.cdf(a - b) - math.exp(epsilon) * norm.cdf(-a - b)
    assert achieved <= delta * (1 + 1e-9)
    assert achieved >= delta * 0.999  # the smallest such σ, not just a safe one
    if epsilon < 1:  # the classic calibration holds there and is looser
        assert sigma < sensitivity * math.sqrt(2 * math.log(1.25 / delta)) / epsilon


def test_private_release_clips_adds_noise_and_keeps_the_label_order():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(300, 4)) * 10
    privacy = Privacy(epsilon=2.0, delta=1e-5, clip=3.0, labels=["c", "b", "a"])
    clipped = privacy.clip(x)
    assert np.all(np.linalg.norm(clipped, axis=1) <= 3.0 + 1e-12)
    small = np.array([[0.5, 0.0, 0.0, 0.0]])
    assert np.array_equal(privacy.clip(small), small)
    s = fastretrain.Statistics(4)
    s.accumulate(clipped, ["a" if i % 2 else "b" for i in range(300)])  # no "c" here
    released = privacy.noisy(s, seed=1)
    assert released.labels == ["c", "b", "a"]
    noise = released.gram() - s.gram()
    assert np.allclose(noise, noise.T)
    assert 0.5 * privacy.sigma < noise[np.triu_indices(5)].std() < 1.5 * privacy.sigma
    # "c" was never seen: its exact column is -Σx, the released one that plus noise.
    exact_c = -s.gram()[:, -1]
    assert np.abs(released.cross()[:, 0] - exact_c).max() < 6 * privacy.sigma
    assert released.samples == pytest.approx(released.gram()[-1, -1])
    with pytest.raises(ValueError):
        Privacy(1.0, 1e-5, 3.0, ["a"]).noisy(s)  # "b" is outside the fleet's labels
    grid = lambda_grid(privacy.sigma, 4)
    assert min(grid) >= 2 * privacy.sigma * math.sqrt(5)
