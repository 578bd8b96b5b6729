"""In-process checks of the torchrun support: the per-rank sampler, case sharding, launch
variables and devices, the session's life cycle and DistributedDataParallel on every network."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from hypothesis import given, settings
from hypothesis import strategies as st

from segcli.config.schema import (
    AugmentSpec,
    CNNSpec,
    DiceCESpec,
    DilatedSpec,
    FCNSpec,
    PatchCNNSpec,
    UNetSpec,
)
from segcli.data.loaders import CaseData, EpochSampler, PatchDataset, build_loader
from segcli.engine import distributed, runtime
from segcli.errors import SegcliError
from segcli.losses import build_loss
from segcli.losses.deep_supervision import compute_loss
from segcli.models import ARCHITECTURES, build

TORCHRUN_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


@pytest.fixture(autouse=True)
def no_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in TORCHRUN_VARS:
        monkeypatch.delenv(name, raising=False)


def _cases() -> list[CaseData]:
    rng = np.random.default_rng(1)
    out = []
    for k in range(3):
        image = rng.normal(size=(1, 12, 14)).astype(np.float32)
        label = (rng.random((12, 14)) > 0.8).astype(np.int64)
        out.append(CaseData(f"c{k}", image, label, (1.0, 1.0)))
    return out


CASES = _cases()


# --------------------------------------------------------------------------- sampler


@settings(max_examples=12, deadline=None)
@given(
    world=st.integers(1, 4),
    batch=st.integers(1, 3),
    steps=st.integers(1, 3),
    epoch=st.integers(0, 5),
)
def test_the_ranks_step_batches_together_are_the_single_process_batch(
    world: int, batch: int, steps: int, epoch: int
) -> None:
    dataset = PatchDataset(
        CASES, (8, 8), 0.5, AugmentSpec(flip=True, intensity=True), length=steps * batch * world
    )
    dataset.set_epoch(epoch)
    single = list(build_loader(dataset, batch * world, workers=0, seed=0))
    ranks = [
        list(build_loader(dataset, batch, workers=0, seed=0, rank=r, world_size=world))
        for r in range(world)
    ]
    assert len(single) == steps
    assert all(len(batches) == steps for batches in ranks)
    for s in range(steps):
        images, labels = single[s]
        for r in range(world):
            rank_images, rank_labels = ranks[r][s]
            # item j of rank r is item j·world + r of the single process's batch
            assert torch.equal(rank_images, images[r::world])
            assert torch.equal(rank_labels, labels[r::world])


def test_the_sampler_rejects_a_rank_outside_the_world() -> None:
    dataset = PatchDataset(CASES, (8, 8), 0.0, AugmentSpec(flip=False), length=4)
    with pytest.raises(ValueError, match="rank 2 of 2"):
        EpochSampler(dataset, rank=2, world_size=2)
    assert [list(EpochSampler(dataset, r, 3)) for r in range(3)] == [
        [(0, 0), (0, 3)],
        [(0, 1)],
        [(0, 2)],
    ]


# --------------------------------------------------------------------------- shard


@settings(max_examples=30, deadline=None)
@given(items=st.lists(st.text(max_size=3), max_size=12), world=st.integers(1, 6))
def test_shards_partition_the_items(items: list[str], world: int) -> None:
    shares = []
    for r in range(world):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(distributed, "rank", lambda r=r: r)
            mp.setattr(distributed, "world_size", lambda: world)
            shares.append(distributed.shard(items))
    # every position goes to exactly one rank, and the shares differ by at most one item
    positions = sorted(i for r in range(world) for i in range(r, len(items), world))
    assert positions == list(range(len(items)))
    assert [x for r in range(world) for x in shares[r]] == [
        items[i] for r in range(world) for i in range(r, len(items), world)
    ]
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


# --------------------------------------------------------------------------- launch


def test_without_torchrun_everything_is_rank_0_of_1() -> None:
    assert distributed.launch_env() is None
    with distributed.session("cpu") as ctx:
        assert (ctx.rank, ctx.world_size, ctx.device, ctx.is_main) == (0, 1, "cpu", True)
        assert not dist.is_initialized()
        assert distributed.all_reduce_sum([1.5, 2]) == [1.5, 2.0]
        assert distributed.all_gather_object({"a": 1}) == [{"a": 1}]
        net = torch.nn.Linear(2, 2)
        assert distributed.wrap_model(net, "cpu") is net
        distributed.barrier()


def test_world_size_1_is_not_distributed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    assert distributed.launch_env() is None


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"WORLD_SIZE": "2"}, "RANK is None; start the processes with torchrun"),
        ({"WORLD_SIZE": "2", "RANK": "2"}, "RANK is '2'"),
        ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two' is not an integer"),
    ],
)
def test_inconsistent_launch_variables_are_user_errors(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], needle: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SegcliError, match=needle.replace("(", r"\(")):
        distributed.launch_env()


def test_launch_variables_give_rank_world_and_local_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.launch_env() == (5, 8, 1)


def test_one_gpu_for_all_processes_is_refused() -> None:
    with pytest.raises(SegcliError, match="use --device cuda"):
        distributed._rank_device("cuda:1", local_rank=0, world=2)
    assert distributed._rank_device("cpu", local_rank=3, world=4) == "cpu"
    if not torch.cuda.is_available():
        assert distributed._rank_device("auto", local_rank=1, world=2) == "cpu"
        with pytest.raises(SegcliError, match="CUDA is not available"):
            distributed._rank_device("cuda", local_rank=0, world=2)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_means_the_gpu_of_the_local_rank() -> None:
    count = torch.cuda.device_count()
    assert distributed._rank_device("cuda", local_rank=count - 1, world=2) == f"cuda:{count - 1}"
    with pytest.raises(SegcliError, match=f"this node has {count} GPU"):
        distributed._rank_device("cuda", local_rank=count, world=count + 1)


# --------------------------------------------------------------------------- a caller's group


@pytest.fixture
def group(tmp_path: Path) -> Iterator[None]:
    """A one-process gloo group, as a Python-API caller would set up."""
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_a_callers_group_is_used_and_left_open(group: None) -> None:
    was = runtime.is_quiet()
    with distributed.session("cpu") as ctx:
        assert (ctx.rank, ctx.world_size) == (0, 1)
        assert distributed.all_gather_object(3) == [3]
    assert dist.is_initialized()
    assert runtime.is_quiet() == was


def _tiny(arch: str) -> tuple[object, tuple[int, ...]]:
    specs = {
        "cnn": (CNNSpec(dims=2, filters=3, norm="batch"), (12, 12)),
        "dilated": (DilatedSpec(dims=2, filters=3), (12, 12)),
        "patch_cnn": (
            PatchCNNSpec(dims=2, filters=2, hidden=4, input_size=19, kernel_sizes=[2, 2]),
            (12, 12),
        ),
        "fcn": (FCNSpec(dims=2, filters=2, convs_per_stage=[1, 1, 1], fc_filters=4), (16, 16)),
        "unet": (
            UNetSpec(dims=3, filters=2, depth=2, deep_supervision=True, dropout=0.1),
            (8, 8, 8),
        ),
    }
    return specs[arch]


@pytest.mark.parametrize("arch", ARCHITECTURES.names())
def test_every_network_trains_under_distributed_data_parallel(group: None, arch: str) -> None:
    """DDP refuses parameters that get no gradient (at the second step): none may exist."""
    spec, size = _tiny(arch)
    torch.manual_seed(0)
    net = build(spec)  # type: ignore[arg-type]
    model = torch.nn.parallel.DistributedDataParallel(net)
    loss_fn = build_loss(DiceCESpec(name="dice_ce"), 2, False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    for step in range(2):
        image = torch.randn(2, 1, *size, generator=torch.Generator().manual_seed(step))
        label = (image[:, 0] > 0.5).long()
        loss = compute_loss(loss_fn, model(image), label, multilabel=False)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert model.module is net
    changed = [k for k, v in net.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, "the two steps changed no weight"


def test_launch_variables_without_torchrun_are_a_user_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, value in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    session = distributed.session("cpu")
    with pytest.raises(SegcliError, match="cannot join the process group of 2 processes"):
        session.__enter__()
    assert not dist.is_initialized()
