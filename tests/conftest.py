"""Session fixtures; the helpers themselves live in `tests/helpers.py`."""

from __future__ import annotations

import pytest
import torch

import mimi
from mimi.model import MimiModel
from tests.helpers import make_model


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """One torch thread for the whole suite: the models under test are tiny, and on a busy shared
    2-core machine torch threads waiting on each other turn into seconds of stalls (a tiny-model
    LM step took 170 ms with two threads against 6 ms with one). Session-scoped, so module- and
    session-scoped model fixtures are built under it too."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def released_model() -> MimiModel:
    """The released architecture (32 codebooks) with realistic random weights."""
    return make_model(mimi.MimiConfig.released(), num_codebooks=32)


@pytest.fixture(scope="session")
def tiny_model() -> MimiModel:
    return make_model(mimi.MimiConfig.tiny(), num_codebooks=8)
