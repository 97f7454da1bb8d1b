"""Shared test helpers."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
VECTORS = ROOT / "vectors"


def load_vectors(name: str) -> Any:
    return json.loads((VECTORS / name).read_text())


@pytest.fixture
def rng() -> Callable[[int], bytes]:
    """Deterministic randomness for protocol calls."""
    return random.Random(1234).randbytes
