import os

import pytest
import torch

# Small models run fastest, and least disturbed by other processes, on one thread.
torch.set_num_threads(1)
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def small_net():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 3), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(6 * 6 * 6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4),
    )
