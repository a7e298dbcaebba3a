"""Shared test fixtures."""

from __future__ import annotations

import pytest


@pytest.fixture
def torch_one_thread():
    """Run torch on one thread for the test (small models; keeps the 2-core CI machine responsive)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
