"""``segcli train`` (segcli/engine/train.py and the rooms it calls: optim, train_data, run_dir).

Interrupts and resume after a kill are in tests/reliability/test_interrupt.py; deep supervision
in tests/nnunet/test_deep_supervision.py.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from segcli.engine.execution import prepare_model
from segcli.engine.optim import build_optimizer, lr_factor
from segcli.engine.train import fit
from segcli.engine.train_data import check_label_range
from segcli.errors import DataError
from segcli.io.checkpoint import Checkpoint
from segcli.models import build

# --------------------------------------------------------------------------- schedule


def test_lr_factor_warms_up_linearly_then_follows_the_schedule() -> None:
    assert [lr_factor(s, 100, 4, "poly") for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(4, 100, 4, "poly") == 1.0
    assert lr_factor(52, 100, 4, "poly") == pytest.approx(0.5**0.9)  # halfway after warm-up
    assert lr_factor(100, 100, 4, "poly") == 0.0
    assert lr_factor(52, 100, 4, "cosine") == pytest.approx(0.5)
    assert lr_factor(0, 100, 0, "cosine") == 1.0
    assert lr_factor(99, 100, 0, "constant") == 1.0
    with pytest.raises(ValueError, match="unknown schedule 'step'"):
        lr_factor(10, 100, 0, "step")


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_the_scheduler_applies_lr_factor_per_step(
    tmp_path: Path, optimizer: str, make_tiny_run
) -> None:
    exp = make_tiny_run(
        tmp_path, epochs=2, optimizer=optimizer, lr=0.1, warmup_epochs=1, schedule="poly"
    )
    model = build(exp.model)
    opt, scheduler = build_optimizer(exp, model)
    expected_type = torch.optim.SGD if optimizer == "sgd" else torch.optim.AdamW
    assert isinstance(opt, expected_type)
    total, warmup = 4, 2  # epochs × iterations, warm-up epochs × iterations
    for step in range(total):
        assert opt.param_groups[0]["lr"] == pytest.approx(
            0.1 * lr_factor(step, total, warmup, "poly")
        )
        opt.step()
        scheduler.step()


# --------------------------------------------------------------------------- pieces


def test_labels_outside_the_model_classes_are_refused_naming_the_case(
    tmp_path: Path, make_tiny_run
) -> None:
    exp = make_tiny_run(tmp_path, epochs=2)  # 2 classes: values 0..1

    class Case:
        name = "bad_case"
        label = np.array([[0, 1], [2, 0]], dtype=np.uint8)

    with pytest.raises(DataError, match=r"case 'bad_case': .* value 2 .* model.classes to 3"):
        check_label_range([Case()], exp)


@pytest.mark.parametrize(
    ("precision", "dtype"), [("fp32", torch.float32), ("bf16", torch.bfloat16)]
)
def test_prepare_model_follows_train_precision_and_the_layout_rule(
    tmp_path: Path, make_tiny_run, precision: str, dtype: torch.dtype
) -> None:
    exp = make_tiny_run(tmp_path, epochs=2, precision=precision)
    model = build(exp.model)
    execution = prepare_model(model, exp, "cpu")
    assert execution.precision.name == precision
    assert execution.memory_format == torch.contiguous_format  # 2D on CPU (bench/precision.py)
    assert not execution.scaler.is_enabled()  # a gradient scaler for fp16 only
    with execution.autocast():
        out = execution.model(torch.randn(1, 1, 16, 16))
    assert out.dtype == dtype
    assert all(p.dtype == torch.float32 for p in model.parameters())


# --------------------------------------------------------------------------- the loop


def test_fit_writes_the_run_folder_and_resume_continues_the_same_run(
    tmp_path: Path, make_tiny_run
) -> None:
    run = tmp_path / "run"
    result = fit(make_tiny_run(tmp_path, epochs=2), run_dir=run, device="cpu")
    for name in ("config.yaml", "split.json", "checkpoint_last.pt", "checkpoint_best.pt"):
        assert (run / name).is_file(), name
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    split = json.loads((run / "split.json").read_text())
    assert set(split) == {"train", "val"} and not set(split["train"]) & set(split["val"])
    with (run / "log.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == [0, 1] and result.epochs_run == 2
    last = Checkpoint.load(run / "checkpoint_last.pt")
    assert last.epoch == 1 and last.log is not None and len(last.log) == 2
    assert last.best_epoch == result.best_epoch and last.best_dice == result.best_dice
    assert math.isfinite(result.best_dice) and 0.0 <= result.best_dice <= 1.0
    assert result.iterations == 4  # 2 epochs × 2 iterations

    longer = fit(make_tiny_run(tmp_path, epochs=3), run_dir=run, device="cpu", resume=True)
    assert [int(r["epoch"]) for r in longer.rows] == [0, 1, 2]
    assert longer.rows[:2] == last.log  # the first two epochs are kept, not retrained
    assert longer.iterations == 2  # only epoch 3 ran
    assert Checkpoint.load(run / "checkpoint_last.pt").epoch == 2
