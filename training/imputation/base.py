"""The one API every imputer follows, and how imputers are saved and found again.

Imputers work on *standardised* windows (see :class:`bedside.training.windows.Standardiser`):
float32 arrays of shape ``(n, steps, variables)`` (or one window, ``(steps, variables)``)
with NaN where a value is missing. ``impute`` returns the same shape with every NaN
filled and every observed value left exactly as it was.

A saved imputer is a folder with ``imputer.json`` (``{"kind": ..., "config": ...}``) and
whatever weights the kind needs, written without pickle (JSON, or torch tensors read
back with ``weights_only=True``).
"""

from __future__ import annotations

import importlib
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

#: kind -> "module:Class"; imported only when used, so torch loads only for torch models.
IMPUTERS: dict[str, str] = {
    "mean": "bedside.training.imputation.classical:MeanImputer",
    "locf": "bedside.training.imputation.classical:LocfImputer",
    "linear": "bedside.training.imputation.classical:LinearImputer",
    "knn": "bedside.training.imputation.classical:KnnImputer",
    "iterative": "bedside.training.imputation.classical:IterativeImputer",
    "attention": "bedside.training.imputation.attention.model:AttentionImputer",
}


class Imputer(ABC):
    """Fill missing values of standardised windows."""

    kind: ClassVar[str]

    @abstractmethod
    def fit(self, windows: np.ndarray) -> Self:
        """Learn from training windows (n, steps, variables); NaN = missing."""

    @abstractmethod
    def _impute(self, windows: np.ndarray) -> np.ndarray:
        """Fill a batch (n, steps, variables); may change observed values (restored after)."""

    def impute(self, windows: np.ndarray) -> np.ndarray:
        """Fill every NaN of one window (steps, variables) or a batch; keep observed values."""
        single = windows.ndim == 2
        batch = windows[None] if single else windows
        if batch.ndim != 3:
            raise ValueError(f"windows must be 2-D or 3-D, got shape {windows.shape}")
        batch = batch.astype(np.float32, copy=False)
        filled = self._impute(batch).astype(np.float32, copy=False)
        filled = np.where(np.isnan(batch), filled, batch)
        if np.isnan(filled).any():
            raise RuntimeError(f"{self.kind} imputer left missing values")
        return filled[0] if single else filled

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild this imputer, as JSON values."""

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "imputer.json").write_text(
            json.dumps({"kind": self.kind, "config": self.config()}, indent=2) + "\n"
        )
        self._save_weights(directory)

    def _save_weights(self, directory: Path) -> None:  # noqa: B027 - most kinds have none
        """Write learnt state beyond the config (only some kinds have any)."""

    @classmethod
    @abstractmethod
    def _load(cls, config: dict[str, Any], directory: Path) -> Self:
        """Rebuild from ``config`` and the files in ``directory``."""


def imputer_class(kind: str) -> type[Imputer]:
    try:
        target = IMPUTERS[kind]
    except KeyError:
        raise ValueError(f"unknown imputer {kind!r}; known: {', '.join(IMPUTERS)}") from None
    module, _, name = target.partition(":")
    cls: type[Imputer] = getattr(importlib.import_module(module), name)
    return cls


def load_imputer(directory: Path) -> Imputer:
    """Load a saved imputer (no pickle involved)."""
    path = directory / "imputer.json"
    if not path.exists():
        raise FileNotFoundError(f"{path}: not a saved imputer (no imputer.json)")
    data = json.loads(path.read_text())
    return imputer_class(data["kind"])._load(data["config"], directory)
