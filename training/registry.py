"""A versioned model registry: a folder of survival models and which one is current.

::

    REGISTRY/
      versions/20261129T0400Z-tsfel-lr/   a model folder (bedside train survival)
        evaluation.json                   how it compared with the model it challenged
      CURRENT                             the name of the promoted version
      history.jsonl                       one line per promotion (when, what, why)

``bedside retrain`` adds versions and promotes the ones that are not worse; the
engine, started with ``--model REGISTRY``, serves ``CURRENT`` and switches to a newly
promoted version while it runs. ``CURRENT`` is replaced atomically (written aside, then
renamed), so a reader sees the old name or the new one, never half of one.

>>> import tempfile
>>> registry = ModelRegistry(Path(tempfile.mkdtemp()))
>>> registry.current() is None
True
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bedside.errors import BedsideError

CURRENT_FILE = "CURRENT"
VERSIONS_DIR = "versions"
HISTORY_FILE = "history.jsonl"


class RegistryError(BedsideError, ValueError):
    """The registry folder is not usable as such."""


def is_registry(path: Path) -> bool:
    return (path / CURRENT_FILE).exists() or (path / VERSIONS_DIR).is_dir()


class ModelRegistry:
    """The registry in ``root`` (created on first write)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def new_version(self, arch: str) -> Path:
        """A fresh, empty version folder named after the time and the architecture."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        folder = self.root / VERSIONS_DIR / f"{stamp}-{arch}"
        folder.mkdir(parents=True, exist_ok=False)
        return folder

    def current_name(self) -> str | None:
        path = self.root / CURRENT_FILE
        if not path.exists():
            return None
        name = path.read_text().strip()
        if not name or "/" in name or name.startswith("."):
            raise RegistryError(f"{path}: {name!r} is not a version name")
        return name

    def current(self) -> Path | None:
        """The folder of the promoted version, or None when nothing was promoted."""
        name = self.current_name()
        if name is None:
            return None
        folder = self.root / VERSIONS_DIR / name
        if not (folder / "model.json").exists():
            raise RegistryError(f"{self.root}: current version {name} has no model.json")
        return folder

    def promote(self, version: Path, reason: str, evaluation: dict[str, Any]) -> None:
        """Make ``version`` the current model and record why."""
        if version.parent != self.root / VERSIONS_DIR or not (version / "model.json").exists():
            raise RegistryError(f"{version} is not a version of {self.root}")
        previous = self.current_name()
        aside = self.root / f".{CURRENT_FILE}.{os.getpid()}"
        aside.write_text(version.name + "\n")
        os.replace(aside, self.root / CURRENT_FILE)
        entry = {
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            "promoted": version.name,
            "replaced": previous,
            "reason": reason,
            "evaluation": evaluation,
        }
        with (self.root / HISTORY_FILE).open("a") as history:
            history.write(json.dumps(entry) + "\n")

    def history(self) -> list[dict[str, Any]]:
        path = self.root / HISTORY_FILE
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
