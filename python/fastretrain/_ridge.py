"""RidgeHead: the exact streaming ridge classifier as a scikit-learn estimator."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from ._core import Statistics, default_lambda_grid

_CHUNK = 4096


class RidgeHead(ClassifierMixin, BaseEstimator):
    """Ridge classifier on feature rows whose statistics stream and add up exactly.

    It keeps ``G = sum x x^T`` and ``B = sum x t^T`` for ``x = [features, 1]`` and one-hot
    targets ``t`` in {-1, +1} per class (memory O(d^2), whatever the number of rows), and
    solves ``W = (G + lam I)^-1 B`` on demand. ``partial_fit`` is exact: any split of the rows
    into calls gives the head of ``fit`` on all of them; a class first seen in a later call
    counts -1 for the rows before, as if it had been known from the start.

    Parameters
    ----------
    alpha : float or None
        The ridge term lambda. None: chosen by generalised cross-validation over ``alphas``.
    alphas : sequence of float or None
        The GCV grid (default 10^-3 ... 10^4 in half-decade steps).

    The bias is the last input of ``x``, regularised like the features: the solution equals
    scikit-learn's ``RidgeClassifier(alpha=lam, fit_intercept=False)`` on ``[X, 1]``.
    """

    def __init__(self, alpha=None, alphas=None):
        self.alpha = alpha
        self.alphas = alphas

    # -- fitting ------------------------------------------------------------------------
    def fit(self, X, y):
        """Fits on all rows (forgets earlier calls)."""
        for attr in ("classes_", "n_features_in_", "feature_names_in_"):
            if hasattr(self, attr):
                delattr(self, attr)
        self._stats = None
        return self.partial_fit(X, y)

    def partial_fit(self, X, y, classes=None):
        """Adds rows (exact). ``classes`` may name classes before their rows arrive."""
        first = getattr(self, "_stats", None) is None
        X, y = validate_data(self, X, y, reset=first, dtype=(np.float64, np.float32))
        check_classification_targets(y)
        if first:
            self._stats = Statistics(X.shape[1])
            self._keys = {}
        new = np.unique(y) if classes is None else np.union1d(np.unique(y), np.asarray(classes))
        for c in new:
            self._keys.setdefault(self._key(c), c)
        keys = [self._key(c) for c in y]
        # float64 rows in chunks: a float32 X is not copied whole (the statistics are f64).
        for i in range(0, max(len(X), 1), _CHUNK):
            self._stats.accumulate(np.ascontiguousarray(X[i:i + _CHUNK], dtype=np.float64),
                                   keys[i:i + _CHUNK])
        self._stats_changed()
        return self

    def merge(self, other):
        """Adds the statistics of another RidgeHead fitted on rows of the same width."""
        check_is_fitted(self)
        check_is_fitted(other)
        if other.n_features_in_ != self.n_features_in_:
            raise ValueError(
                f"cannot merge {other.n_features_in_} features into {self.n_features_in_}")
        self._stats.merge(other._stats)
        for key, c in other._keys.items():
            self._keys.setdefault(key, c)
        self._stats_changed()
        return self

    def forget(self, X, y):
        """Removes rows added before (exact unlearning)."""
        check_is_fitted(self)
        X, y = validate_data(self, X, y, reset=False, dtype=(np.float64, np.float32))
        unknown = sorted({str(c) for c in y if self._key(c) not in self._keys})
        if unknown:
            raise ValueError(f"classes never learned: {', '.join(unknown)}")
        self._stats.forget(np.ascontiguousarray(X, dtype=np.float64), [self._key(c) for c in y])
        self._stats_changed()
        return self

    # -- the solution ---------------------------------------------------------------------
    @property
    def alpha_(self):
        """The lambda the head was solved with (GCV's choice when ``alpha`` is None)."""
        self._solve()
        return self._solution["alpha"]

    @property
    def coef_(self):
        """Weights, classes x features (binary: 1 x features, for ``classes_[1]``)."""
        w = self._solve()
        return w[:-1, 1:].T if len(self.classes_) == 2 else w[:-1].T

    @property
    def intercept_(self):
        w = self._solve()
        return w[-1, 1:] if len(self.classes_) == 2 else w[-1]

    @property
    def statistics_(self):
        """The underlying :class:`fastretrain.Statistics` (G, B, counts)."""
        check_is_fitted(self)
        return self._stats

    def decision_function(self, X):
        """Scores, n x classes (binary: n, positive for ``classes_[1]``; one class: n)."""
        w = self._solve()
        X = validate_data(self, X, reset=False, dtype=np.float64)
        scores = X @ w[:-1] + w[-1]
        if len(self.classes_) == 2:
            return scores[:, 1]
        return scores[:, 0] if len(self.classes_) == 1 else scores

    def predict(self, X):
        scores = self.decision_function(X)
        if len(self.classes_) == 1:
            return np.repeat(self.classes_, len(scores))
        if scores.ndim == 1:
            return self.classes_[(scores > 0).astype(int)]
        return self.classes_[np.argmax(scores, axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = True
        return tags

    # -- internals ----------------------------------------------------------------------
    @staticmethod
    def _key(c):
        return str(c.item() if isinstance(c, np.generic) else c)

    def _stats_changed(self):
        self.classes_ = np.array(sorted(self._keys.values()))
        # Solved on first use (a stream of partial_fit calls pays for one solve, not one per
        # call); a container made here, so that predicting does not add attributes.
        self._solution = {}

    def _solve(self):
        """W, (d+1) x classes in ``classes_`` order (one column per class, also binary)."""
        check_is_fitted(self)
        if "w" not in self._solution:
            lam = self.alpha
            if lam is None:
                grid = default_lambda_grid if self.alphas is None else [float(a) for a in self.alphas]
                lam = self._stats.gcv(grid)[0]
            w = self._stats.solve(float(lam))
            order = [self._stats.labels.index(self._key(c)) for c in self.classes_]
            self._solution.update(w=w[:, order], alpha=float(lam))
        return self._solution["w"]
