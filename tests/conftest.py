"""Session fixtures; the helpers themselves live in `tests/helpers.py`."""

from __future__ import annotations

import pytest

import mimi
from mimi.model import MimiModel
from tests.helpers import make_model


@pytest.fixture(scope="session")
def released_model() -> MimiModel:
    """The released architecture (32 codebooks) with realistic random weights."""
    return make_model(mimi.MimiConfig.released(), num_codebooks=32)


@pytest.fixture(scope="session")
def tiny_model() -> MimiModel:
    return make_model(mimi.MimiConfig.tiny(), num_codebooks=8)
