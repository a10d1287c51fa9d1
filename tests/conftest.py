"""Every test runs with autograd off, as the library must (hard rule 1).

Oracle code that needs torch.autograd opens ``torch.enable_grad()`` itself.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch
from hypothesis import settings

settings.register_profile("ci", max_examples=30, deadline=None)
# HYPOTHESIS_PROFILE=deep for a long search (500 examples a property) before a release
settings.register_profile("deep", max_examples=500, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Under pytest-xdist (make test runs two workers on CI's two cores) each worker would
# take torch's default of one thread per core: four threads on two cores, whose OpenMP
# waits slow every test several-fold (test_training_parity: 6 s alone, 38 to 66 s beside
# a second worker). One thread per worker; a test that needs more sets them itself.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _autograd_off() -> Iterator[None]:
    previous = torch.is_grad_enabled()
    torch.set_grad_enabled(False)
    yield
    torch.set_grad_enabled(previous)
