"""Type stubs of the Rust extension `fastretrain._core` (see fastretrain/__init__.py)."""

from os import PathLike
from typing import Any, Sequence

import numpy as np
import numpy.typing as npt

default_lambda_grid: list[float]

class Error(Exception): ...
class DataError(Error): ...
class ModelError(Error): ...
class StateError(Error): ...
class SolverError(Error): ...

class Statistics:
    def __init__(self, dim: int) -> None: ...
    @property
    def dim(self) -> int: ...
    @property
    def labels(self) -> list[str]: ...
    @property
    def samples(self) -> float: ...
    @property
    def class_counts(self) -> list[float]: ...
    @property
    def target_sq(self) -> float: ...
    @staticmethod
    def from_arrays(
        gram: npt.NDArray[np.float64],
        cross: npt.NDArray[np.float64],
        labels: Sequence[str],
        samples: float,
        target_sq: float,
        class_counts: Sequence[float],
    ) -> Statistics: ...
    def accumulate(self, x: npt.NDArray[np.float64], labels: Sequence[str]) -> None: ...
    def forget(self, x: npt.NDArray[np.float64], labels: Sequence[str]) -> None: ...
    def merge(self, other: Statistics) -> None: ...
    def solve(self, lam: float) -> npt.NDArray[np.float64]: ...
    def gcv(self, grid: Sequence[float] | None = None) -> tuple[float, list[float], list[float]]: ...
    def gram(self) -> npt.NDArray[np.float64]: ...
    def cross(self) -> npt.NDArray[np.float64]: ...
    def copy(self) -> Statistics: ...
    def to_bytes(self) -> bytes: ...
    @staticmethod
    def from_bytes(bytes: bytes) -> Statistics: ...

class Retrainer:
    def __init__(
        self,
        model: str | None = None,
        state: str | None = None,
        feature_tensor: str | None = None,
        threads: int | None = None,
    ) -> None: ...
    def learn(
        self,
        source: str | None = None,
        *,
        paths: Sequence[str] | None = None,
        images: npt.NDArray[np.uint8] | None = None,
        tensors: npt.NDArray[np.float32] | None = None,
        labels: Sequence[str] | None = None,
        limit: int | None = None,
        lam: float | None = None,
        relearn: bool = False,
        skip_bad: bool = False,
        shard: tuple[int, int] | None = None,
    ) -> dict[str, Any]: ...
    def forget(
        self,
        source: str | None = None,
        *,
        paths: Sequence[str] | None = None,
        images: npt.NDArray[np.uint8] | None = None,
        tensors: npt.NDArray[np.float32] | None = None,
        labels: Sequence[str] | None = None,
        lam: float | None = None,
    ) -> dict[str, Any]: ...
    def fit(
        self,
        lam: float | None = None,
        *,
        method: str = "gram",
        store: str | None = None,
        batch: int | None = None,
        eta: float = 0.5,
        passes: int = 1,
        hidden: str = "1024",
        activation: str = "bsig",
        iterations: int = 2,
        seed: int = 1,
    ) -> dict[str, Any]: ...
    def features(
        self,
        source: str | None = None,
        *,
        paths: Sequence[str] | None = None,
        images: npt.NDArray[np.uint8] | None = None,
        tensors: npt.NDArray[np.float32] | None = None,
        limit: int | None = None,
    ) -> npt.NDArray[np.float32]: ...
    def scores(
        self,
        source: str | None = None,
        *,
        paths: Sequence[str] | None = None,
        images: npt.NDArray[np.uint8] | None = None,
        tensors: npt.NDArray[np.float32] | None = None,
        limit: int | None = None,
    ) -> npt.NDArray[np.float64]: ...
    def evaluate(
        self,
        source: str | None = None,
        *,
        paths: Sequence[str] | None = None,
        images: npt.NDArray[np.uint8] | None = None,
        tensors: npt.NDArray[np.float32] | None = None,
        labels: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> dict[str, Any]: ...
    def merge(
        self, other: str, *, lam: float | None = None, distinct_sources: bool = False
    ) -> dict[str, Any]: ...
    def export(self, out: str, *, model: str | None = None) -> dict[str, Any]: ...
    def save(self, path: str | None = None) -> None: ...
    def statistics(self) -> dict[str, Any]: ...
    def to_statistics(self) -> Statistics: ...
    def merge_statistics(self, stats: Statistics, *, lam: float | None = None) -> dict[str, Any]: ...
    def set_head(
        self, weights: npt.NDArray[np.float64], labels: Sequence[str], lam: float, *, samples: float = 0.0
    ) -> None: ...
    @property
    def fingerprint(self) -> dict[str, Any]: ...
    def head(self) -> tuple[npt.NDArray[np.float64], float]: ...
    @property
    def labels(self) -> list[str]: ...
    @property
    def statistics_digest(self) -> str: ...
    @property
    def dim(self) -> int: ...

