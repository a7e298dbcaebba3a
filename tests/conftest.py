"""Shared test fixtures."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def _torch_one_thread_session():
    """Every test (and module fixture) runs torch on one thread: small models, a 2-core shared machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def torch_one_thread():
    """Run torch on one thread for the test (small models; keeps the 2-core CI machine responsive)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
