"""Where the real data lives (../shared/data), and a clear skip when it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

#: ../shared/data next to the repository, as on every machine of the project and in CI.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared(*parts: str) -> Path:
    """Path under ../shared/data; skip the test with a clear reason when it is missing."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path} is missing (see ../shared/data/README.md)")
    return path
