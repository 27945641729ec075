"""Freeze-SGD under torch.distributed on CPU (gloo, 2 processes): DDP ranks end every step with
identical weights; under FSDP2 each rank resets its own shard with the values a non-sharded run
draws, with no communication."""
import copy

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from polarity import Freezer, Template, impose

# one pytest-xdist worker runs this module: its module-scoped fixture spawns the ranks (tests/conftest.py)
pytestmark = [pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not built"),
              pytest.mark.xdist_group("test_distributed")]
WORLD = 2


def _worker(rank, init, done):
    """Both parts in one process group (one spawn: each spawned Python imports torch and polarity);
    a file per part and rank says it passed."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    try:
        for name, part in PARTS.items():
            part(rank)
            dist.barrier()   # no rank goes on (or tears gloo down) while another is in a collective
            (done / f"{name}.{rank}").touch()
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def spawned(tmp_path_factory):
    """Runs the workers once; the error of the part that failed, if any (the parts after it did not run)."""
    tmp = tmp_path_factory.mktemp("dist")
    try:
        mp.spawn(_worker, args=(f"file://{tmp / 'rendezvous'}", tmp), nprocs=WORLD, join=True)
        error = None
    except Exception as e:  # noqa: BLE001 - a rank's assertion, reported by the tests below
        error = f"{type(e).__name__}: {e}"
    return tmp, error


def _passed(spawned, name):
    tmp, error = spawned
    if not all((tmp / f"{name}.{rank}").exists() for rank in range(WORLD)):
        pytest.fail(f"the {name} part failed or did not run: {error}")


def _ddp_part(rank):
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))
    template = Template.random(model, seed=1)
    ddp = DDP(model)  # parameters renamed module.*
    impose(ddp, template)
    torch.manual_seed(100 + rank)  # the ranks' generators differ: rank 0's seed is taken
    freezer = Freezer(ddp, template)
    opt = torch.optim.Adam(ddp.parameters(), lr=0.5)
    freezer.attach(opt)
    after = []
    opt.register_step_post_hook(lambda *a: after.append(freezer.violations()))
    g = torch.Generator().manual_seed(rank)  # each rank its own data
    for _ in range(10):
        x = torch.randn(16, 8, generator=g)
        opt.zero_grad()
        ddp(x).pow(2).mean().backward()
        opt.step()
    assert after == [0] * 10 and int(freezer.total_reset) > 0
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    both = [torch.empty_like(flat) for _ in range(WORLD)]
    dist.all_gather(both, flat)
    assert torch.equal(both[0], both[1]), "DDP ranks hold different weights"


def test_ddp_ranks_end_with_bit_identical_weights(spawned):
    _passed(spawned, "ddp")


def _fsdp_part(rank):
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import distribute_tensor

    torch.manual_seed(0)
    # 7, 5 and 3 rows over 2 ranks: uneven shards (4 + 3, 3 + 2, 2 + 1)
    model = nn.Sequential(nn.Linear(8, 7), nn.ReLU(), nn.Linear(7, 5), nn.ReLU(),
                          nn.Linear(5, 3))
    template = Template.random(model, seed=1, biases=True)
    plain = copy.deepcopy(model)
    for layer in model[::2]:
        fully_shard(layer)
    fully_shard(model)

    # the same values as a non-sharded run: impose, then one reset of known weights
    assert impose(model, template) > 0
    impose(plain, template)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p, q in zip(model.parameters(), plain.parameters()):
            assert torch.equal(p.full_tensor(), q)
            w = torch.randn(q.shape, generator=g)
            q.copy_(w)
            p.to_local().copy_(distribute_tensor(w, p.device_mesh, p.placements).to_local())
    sharded, whole = Freezer(model, template, seed=7), Freezer(plain, template, seed=7)
    k = sharded.project()
    dist.all_reduce(k)
    assert int(k) == int(whole.project()) > 0
    with torch.no_grad():
        for p, q in zip(model.parameters(), plain.parameters()):
            assert torch.equal(p.full_tensor(), q), "a shard drew other values"

    # training: every step leaves no violation on any shard
    opt = torch.optim.Adam(model.parameters(), lr=0.5)
    sharded.attach(opt)
    after = []
    opt.register_step_post_hook(lambda *a: after.append(
        (sharded.violations(), sum(template.violations(model).values()))))
    data = torch.Generator().manual_seed(rank)
    before = int(sharded.total_reset)
    for _ in range(6):
        opt.zero_grad()
        model(torch.randn(16, 8, generator=data)).pow(2).mean().backward()
        opt.step()
    assert after == [(0, 0)] * 6
    resets = torch.tensor(int(sharded.total_reset) - before)
    dist.all_reduce(resets)
    assert int(resets) > 0


PARTS = {"ddp": _ddp_part, "fsdp": _fsdp_part}


def test_fsdp2_shards_reset_like_a_whole_model_without_communication(spawned):
    _passed(spawned, "fsdp")
