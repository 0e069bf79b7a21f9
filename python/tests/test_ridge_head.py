"""RidgeHead on the onnxruntime features of the shipped Fashion-MNIST images: exact partial_fit,
scikit-learn's RidgeClassifier as the independent reference, merge, forget, pickling and
scikit-learn's estimator checks."""

import json
import pickle

import numpy as np
import pytest
from sklearn.linear_model import RidgeClassifier
from sklearn.utils.estimator_checks import check_estimator

from conftest import FEATURES, ROOT
import fastretrain
from fastretrain import RidgeHead


@pytest.fixture(scope="module")
def fashion():
    """2,000 rows of 1,280 onnxruntime features (tests/data, made by scripts/reference/make_test_vectors.py)
    with their labels."""
    ref = json.loads((ROOT / "tests" / "data" / "fashion_reference.json").read_text())
    x = np.fromfile(FEATURES, dtype="<f4").astype(np.float64)
    y = np.asarray(ref["train_labels"])
    x = x.reshape(len(y), -1)
    return x, y


def test_partial_fit_over_seven_chunks_equals_fit_on_all_rows(fashion):
    x, y = fashion
    # Rows sorted by label: the first chunks hold only some classes, the rest arrive later.
    order = np.argsort(y, kind="stable")
    xs, ys = x[order], y[order]
    whole = RidgeHead(alpha=3.0).fit(xs, ys)
    streamed = RidgeHead(alpha=3.0)
    for xc, yc in zip(np.array_split(xs, 7), np.array_split(ys, 7)):
        streamed.partial_fit(xc, yc)
    np.testing.assert_array_equal(streamed.classes_, whole.classes_)
    a, b = whole.decision_function(x[:500]), streamed.decision_function(x[:500])
    assert np.max(np.abs(a - b)) <= 1e-9
    assert streamed.score(x, y) == whole.score(x, y)


def test_decision_values_equal_scikit_learns_ridge_classifier(fashion):
    x, y = fashion
    x1 = np.hstack([x, np.ones((len(x), 1))])
    for lam in (0.1, 31.6):
        ours = RidgeHead(alpha=lam).fit(x, y)
        ref = RidgeClassifier(alpha=lam, fit_intercept=False, solver="cholesky").fit(x1, y)
        diff = np.max(np.abs(ours.decision_function(x) - ref.decision_function(x1)))
        assert diff <= 1e-6, f"lambda {lam}: {diff}"
        np.testing.assert_array_equal(ours.predict(x), ref.predict(x1))
    # Binary: one decision column, for classes_[1], like scikit-learn's.
    keep = np.isin(y, [0, 6])
    ours = RidgeHead(alpha=1.0).fit(x[keep], y[keep])
    ref = RidgeClassifier(alpha=1.0, fit_intercept=False, solver="cholesky").fit(x1[keep], y[keep])
    assert ours.decision_function(x[keep]).shape == (keep.sum(),)
    assert np.max(np.abs(ours.decision_function(x[keep]) - ref.decision_function(x1[keep]))) <= 1e-6
    assert ours.coef_.shape == (1, x.shape[1])
    assert np.max(np.abs(ours.coef_.ravel() - np.ravel(ref.coef_)[:-1])) <= 1e-6


def test_gcv_picks_lambda_from_the_grid_and_matches_a_numpy_gcv(fashion):
    x, y = fashion
    head = RidgeHead().fit(x[:600], y[:600])
    grid = fastretrain._core.default_lambda_grid
    assert head.alpha_ in grid
    # NumPy GCV: (RSS/(n c)) / (1 - df/n)^2 on [X, 1] with +-1 targets.
    x1 = np.hstack([x[:600], np.ones((600, 1))])
    t = np.where(y[:600, None] == np.unique(y)[None, :], 1.0, -1.0)
    g, b = x1.T @ x1, x1.T @ t
    ev = np.linalg.eigvalsh(g).clip(min=0)
    scores = []
    for lam in grid:
        w = np.linalg.solve(g + lam * np.eye(len(g)), b)
        rss = np.sum((x1 @ w - t) ** 2)
        df = np.sum(ev / (ev + lam))
        scores.append(rss / t.size / (1 - df / 600) ** 2)
    assert head.alpha_ == grid[int(np.argmin(scores))]


def test_merge_and_forget_are_exact(fashion):
    x, y = fashion
    a = RidgeHead(alpha=2.0).fit(x[:1200], y[:1200])
    b = RidgeHead(alpha=2.0).fit(x[1200:], y[1200:])
    whole = RidgeHead(alpha=2.0).fit(x, y)
    a.merge(b)
    assert np.max(np.abs(a.decision_function(x[:300]) - whole.decision_function(x[:300]))) <= 1e-9
    a.forget(x[1200:], y[1200:])
    first = RidgeHead(alpha=2.0).fit(x[:1200], y[:1200])
    assert np.max(np.abs(a.decision_function(x[:300]) - first.decision_function(x[:300]))) <= 1e-7
    with pytest.raises(ValueError, match="never learned"):
        a.forget(x[:2], np.array([99, 98]))


def test_pickle_round_trip_and_statistics(fashion):
    x, y = fashion
    head = RidgeHead(alpha=5.0).fit(x[:400], y[:400])
    copy = pickle.loads(pickle.dumps(head))
    np.testing.assert_array_equal(copy.decision_function(x[:50]), head.decision_function(x[:50]))
    stats = head.statistics_
    x1 = np.hstack([x[:400], np.ones((400, 1))])
    assert np.max(np.abs(stats.gram() - x1.T @ x1)) <= 1e-9 * np.max(np.abs(x1.T @ x1))
    assert stats.samples == 400


def test_bad_rows_are_refused_and_change_nothing(fashion):
    x, y = fashion
    head = RidgeHead(alpha=1.0).fit(x[:100], y[:100])
    before = head.decision_function(x[:5])
    bad = x[100:110].copy()
    bad[3, 7] = np.nan
    with pytest.raises(ValueError):
        head.partial_fit(bad, y[100:110])
    with pytest.raises(ValueError, match="features"):
        head.partial_fit(x[100:110, :10], y[100:110])
    np.testing.assert_array_equal(head.decision_function(x[:5]), before)


def test_scikit_learn_estimator_checks():
    check_estimator(RidgeHead())
