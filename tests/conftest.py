"""Shared test fixtures."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_blas_thread():
    """One BLAS thread for a module: tiny problems are dominated by thread start-up on a shared 2-core machine.
    Use with `pytestmark = pytest.mark.usefixtures("one_blas_thread")`."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
