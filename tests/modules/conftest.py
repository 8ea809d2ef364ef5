"""Fixtures for the modular-RNN tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Run on one intra-op thread: these tensors are tiny, and on a busy shared machine a second
    OpenMP thread only adds synchronisation stalls (seconds per test in the worst case)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
