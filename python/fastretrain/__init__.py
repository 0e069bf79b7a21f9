"""fastretrain: adapt a pretrained ONNX classifier to your own data with no backprop.

Two entry points:

- :class:`Retrainer` - a frozen ONNX backbone (run by tract, in Rust) whose penultimate features
  are folded into exact ridge statistics; the dense head is refit in closed form. Learn from an
  image folder, IDX files, image files or NumPy uint8 images, or, for a model that is not fed
  images (audio frames, sensor windows), ``.npy`` files and float32 NumPy tensors; fit, predict, evaluate, forget,
  merge, export ONNX, save. The same state files as the ``fastretrain`` command.
- :class:`RidgeHead` - the same exact streaming ridge solver as a scikit-learn classifier on
  feature arrays: ``partial_fit`` is exact (equal to ``fit`` on all rows), new classes may appear
  in later calls, lambda by generalised cross-validation or fixed, ``merge`` and ``forget``.

Errors are :class:`Error` subclasses (:class:`DataError`, :class:`ModelError`,
:class:`StateError`, :class:`SolverError`) carrying the library's message; bad arguments raise
``ValueError``.
"""

from __future__ import annotations

import numpy as np

from . import _core
from ._core import DataError, Error, ModelError, SolverError, StateError, Statistics

__all__ = [
    "Retrainer",
    "RidgeHead",
    "Statistics",
    "Error",
    "DataError",
    "ModelError",
    "StateError",
    "SolverError",
]


def _images(images):
    if images is None:
        return None
    array = np.asarray(images)
    if array.dtype != np.uint8:
        raise ValueError(
            f"images must be uint8 pixels (0-255), got {array.dtype}: "
            "convert with (x * 255).round().astype(np.uint8) if they are floats in [0, 1]"
        )
    return np.ascontiguousarray(array)


def _tensors(tensors):
    if tensors is None:
        return None
    array = np.asarray(tensors)
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(
            f"tensors must be floats of shape (n, ...) (the model's own input values), got "
            f"{array.dtype}: convert with x.astype(np.float32)"
        )
    return np.ascontiguousarray(array, dtype=np.float32)


def _paths(paths):
    return None if paths is None else [str(p) for p in paths]


def _labels(labels):
    return None if labels is None else [str(label) for label in labels]


class Retrainer:
    """A model's retraining state: the frozen backbone, the statistics and the head.

    ``Retrainer(model="mobilenetv2.onnx")`` starts an empty state (the model's spec JSON
    beside it, or a pack from ``fastretrain pack``); ``Retrainer(state="my.frs")`` opens a
    saved one (its model found as the command finds it) or starts one at that path with
    ``model=``. ``threads``: images run side by side (default: one per core).

    Samples are given as exactly one of: a path (a folder ``root/<label>/*.png`` or
    ``*.npy``, IDX images or a ``.npy`` array of samples with its labels file beside them),
    ``paths=`` sample files, ``images=`` a uint8 array of shape (n, h, w) grey or (n, h, w, 3)
    RGB, or ``tensors=`` a float32 array of shape (n, ...) for a model fed with tensors (its spec
    written by ``fastretrain spec --preset tensor``); ``labels=`` go with the last three.
    """

    def __init__(self, model=None, state=None, *, feature_tensor=None, threads=None):
        self._core = _core.Retrainer(
            model=None if model is None else str(model),
            state=None if state is None else str(state),
            feature_tensor=feature_tensor,
            threads=threads,
        )

    def learn(self, source=None, *, paths=None, images=None, tensors=None, labels=None,
              limit=None, lam=None, relearn=False, skip_bad=False, shard=None):
        """Streams labelled samples into the statistics, then refits the head (lambda by GCV
        unless ``lam``). A source already read from resumes after what it absorbed.
        ``shard=(i, k)`` reads only part i of k (contiguous, from 0): states of the k parts
        merge into the state of the whole. Returns the report (samples, labels, timings, the
        fit) as a dict."""
        return self._core.learn(
            None if source is None else str(source), paths=_paths(paths),
            images=_images(images), tensors=_tensors(tensors), labels=_labels(labels),
            limit=limit, lam=lam, relearn=relearn, skip_bad=skip_bad,
            shard=None if shard is None else (int(shard[0]), int(shard[1])))

    def fit(self, lam=None, *, method="gram", store=None, **settings):
        """Refits the head: ``gram`` from the statistics, or ``block-rls``, ``step``,
        ``recompute`` streaming a feature store (``store=``, made by ``fastretrain extract``);
        settings as the command's (``eta``, ``passes``, ``hidden``, ``activation``,
        ``iterations``, ``seed``, ``batch``)."""
        return self._core.fit(lam, method=method,
                              store=None if store is None else str(store), **settings)

    def scores(self, source=None, *, paths=None, images=None, tensors=None, limit=None):
        """Head scores (decision values), n x len(labels), columns in :attr:`labels` order."""
        return self._core.scores(None if source is None else str(source), paths=_paths(paths),
                                 images=_images(images), tensors=_tensors(tensors), limit=limit)

    def predict(self, source=None, *, paths=None, images=None, tensors=None, limit=None, k=1):
        """The best label of each sample, or with ``k > 1`` its top-k ``(label, score)``."""
        scores = self.scores(source, paths=paths, images=images, tensors=tensors, limit=limit)
        labels = self.labels
        if k == 1:
            return [labels[i] for i in np.argmax(scores, axis=1)]
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return [[(labels[j], float(row[j])) for j in top] for row, top in zip(scores, order)]

    def features(self, source=None, *, paths=None, images=None, tensors=None, limit=None):
        """Penultimate features, n x dim float32."""
        return self._core.features(None if source is None else str(source),
                                   paths=_paths(paths), images=_images(images),
                                   tensors=_tensors(tensors), limit=limit)

    def evaluate(self, source=None, *, paths=None, images=None, tensors=None, labels=None,
                 limit=None):
        """Accuracy, per-class accuracy and confusion matrix on labelled samples (a dict)."""
        return self._core.evaluate(None if source is None else str(source),
                                   paths=_paths(paths), images=_images(images),
                                   tensors=_tensors(tensors), labels=_labels(labels), limit=limit)

    def forget(self, source=None, *, paths=None, images=None, tensors=None, labels=None,
               lam=None):
        """Removes samples learned before (exact unlearning), then refits."""
        return self._core.forget(None if source is None else str(source),
                                 paths=_paths(paths), images=_images(images),
                                 tensors=_tensors(tensors), labels=_labels(labels), lam=lam)

    def merge(self, other, *, lam=None, distinct_sources=False):
        """Adds the statistics of another state file (same backbone), then refits. A source
        both states learned is refused (its samples would count twice) unless
        ``distinct_sources`` says they are different data under the same name (two devices'
        folders with the same path); a state merged into this retrainer before is refused
        either way."""
        return self._core.merge(str(other), lam=lam, distinct_sources=bool(distinct_sources))

    def export(self, out, *, model=None):
        """Writes the adapted model as a standard ONNX file (backbone + refit head)."""
        return self._core.export(str(out), model=None if model is None else str(model))

    def save(self, path=None):
        """Saves the state atomically (to the file it was opened from by default)."""
        self._core.save(None if path is None else str(path))

    def to_statistics(self):
        """A copy of the statistics as a :class:`Statistics` (to send, merge or solve
        elsewhere; ``Statistics.to_bytes()`` is its exact serialised form)."""
        return self._core.to_statistics()

    def merge_statistics(self, stats, *, lam=None):
        """Adds :class:`Statistics` learned elsewhere with the same backbone, then refits:
        what :meth:`merge` does with a state file."""
        return self._core.merge_statistics(stats, lam=lam)

    def set_head(self, weights, labels, lam, *, samples=0.0):
        """Replaces the head with one solved elsewhere (e.g. a fleet's): ``weights``
        (dim + 1) x len(labels), the last row the bias. The statistics stay this state's own;
        a later :meth:`fit` or :meth:`learn` solves from them again."""
        self._core.set_head(np.ascontiguousarray(weights, dtype=np.float64),
                            [str(label) for label in labels], float(lam),
                            samples=float(samples))

    @property
    def fingerprint(self):
        """The backbone this state belongs to: ``{"model_sha256", "feature_tensor",
        "feature_dim"}``; statistics only merge between equal fingerprints."""
        return self._core.fingerprint

    def statistics(self):
        """``{"gram": G, "cross": B, "counts", "labels", "samples"}``: G is (d+1)^2 (the last
        row and column the bias input), B is (d+1) x labels."""
        return self._core.statistics()

    def head(self):
        """``(weights, lam)``: weights (m+1) x labels, the last row the bias."""
        return self._core.head()

    @property
    def labels(self):
        """The head's labels, in score column order."""
        return self._core.labels

    @property
    def statistics_digest(self):
        """sha256 of the statistics alone (the command's ``info`` prints the same)."""
        return self._core.statistics_digest

    @property
    def dim(self):
        """The feature dimension."""
        return self._core.dim


def __getattr__(name):
    # RidgeHead needs scikit-learn; importing fastretrain does not.
    if name == "RidgeHead":
        from ._ridge import RidgeHead

        return RidgeHead
    raise AttributeError(f"module 'fastretrain' has no attribute {name!r}")
