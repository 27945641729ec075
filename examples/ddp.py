"""Freeze-SGD under DistributedDataParallel: 2 CPU processes (gloo).  The posRand draws are
keyed by (seed, step, parameter), so the ranks stay bit-identical without communicating.

    python examples/ddp.py            # or: torchrun --nproc-per-node 2 examples/ddp.py
"""
import os
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from polarity import Freezer, Template, impose


def train(rank: int, world: int, rendezvous: str) -> None:
    dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=world)
    torch.manual_seed(0)
    model = DDP(nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 2)))
    template = Template.random(model.module, seed=0)   # fits model.module and model alike
    impose(model, template)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    freezer = Freezer(model, template, seed=0)         # build it on every rank
    freezer.attach(optimizer)
    g = torch.Generator().manual_seed(rank)           # each rank its own data
    for step in range(50):
        x = torch.randn(32, 8, generator=g)
        loss = nn.functional.cross_entropy(model(x), (x[:, 0] * x[:, 1] > 0).long())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    copies = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(copies, flat)
    if rank == 0:
        print(f"ranks identical: {all(torch.equal(copies[0], c) for c in copies)}, "
              f"entries reset {int(freezer.total_reset)}, violations {freezer.violations()}")
    assert torch.equal(copies[0], copies[-1]) and freezer.violations() == 0
    dist.barrier()   # no rank tears gloo down while another is still in a collective
    dist.destroy_process_group()


if __name__ == "__main__":
    if "RANK" in os.environ:  # started by torchrun
        train(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), "env://")
    else:
        rendezvous = f"file://{tempfile.mkdtemp()}/rendezvous"
        mp.spawn(train, args=(2, rendezvous), nprocs=2)
