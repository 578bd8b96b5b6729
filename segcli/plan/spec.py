"""The planned spec as a plain mapping (validated by the writer through
:func:`segcli.config.from_dict`), and what the planner reads back from it.

    >>> spec = build_spec(fp, options, layout, classes, Network(topology, 8, 2), (30, 80, 4))
    >>> spec["data"]["patch_size"], spec["model"]["filters"]
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segcli.labels import as_regions, region_problems
from segcli.plan import checks as plan_checks
from segcli.plan import rules
from segcli.plan.fingerprint import Fingerprint
from segcli.plan.sizing import Layout, is_cuda

__all__ = [
    "BASE_METRICS",
    "Classes",
    "Network",
    "build_spec",
    "loader_workers",
    "receptive_field",
    "usable_regions",
]

BASE_METRICS = ["dice", "iou", "hd95", "assd", "masd", "nsd", "vol_ref", "vol_pred"]


@dataclass(frozen=True)
class Classes:
    """The network's outputs.

    Attributes:
        num_classes: softmax outputs (the largest label value + 1).
        contiguous: the label values are 1..num_classes-1 (else evaluation.labels lists them).
        labels: label value → name, background included.
        values: the foreground label values present.
        regions: dataset.json's nnU-Net regions when segcli can train them, else empty.
    """

    num_classes: int
    contiguous: bool
    labels: dict[int, str]
    values: tuple[int, ...]
    regions: dict[str, tuple[int, ...]]


@dataclass(frozen=True)
class Network:
    """One candidate network: its pooling/patch topology, first-stage filters and batch."""

    topology: rules.Topology
    filters: int
    batch: int


def build_spec(
    fp: Fingerprint,
    options: Any,
    layout: Layout,
    classes: Classes,
    net: Network,
    sched: tuple[int, int, int],
    val_max: int | None = None,
    add_lesion: bool = False,
    optim: dict[str, Any] | None = None,
    *,
    augment: dict[str, Any],
) -> dict[str, Any]:
    """The spec mapping for one candidate (``options``: the planner's PlanOptions)."""
    topo = net.topology
    model_dims = 3 if layout.slice_mode else layout.dims
    patch = layout.embed(topo.patch, 1)
    strides = [layout.embed(s, 1) for s in topo.strides]
    kernels = [layout.embed(k, 1) for k in topo.kernel_sizes]
    # an axis one voxel thick (slices) has no spatial context: kernel 1 along it
    kernels = [[1 if p == 1 else k for k, p in zip(ks, patch, strict=True)] for ks in kernels]
    uniform = all(s == 2 for st in strides for s in st) and all(
        k == 3 for ks in kernels for k in ks
    )
    model: dict[str, Any] = {"arch": "unet", "dims": model_dims, "in_channels": len(fp.channels)}
    if classes.regions:
        model["classes"] = len(classes.regions)
    elif classes.contiguous:
        model["labels"] = dict(classes.labels)
    else:
        model["classes"] = classes.num_classes
    model.update({"filters": net.filters, "depth": topo.depth, "max_filters": layout.cap})
    if not uniform:
        model["strides"] = strides
        model["kernel_sizes"] = kernels
    model.update({"convs_per_block": 2, "padding": "same", "upsample": "transpose",
                  "norm": "instance", "activation": "leaky_relu", "deep_supervision": True})  # fmt: skip
    epochs, per_epoch, val_every = sched
    train: dict[str, Any] = {"epochs": epochs, "iterations_per_epoch": per_epoch,
                             "batch_size": net.batch}  # fmt: skip
    train.update(optim or {"optimizer": "adamw", "lr": 0.003, "weight_decay": 1e-4})
    train.update({"schedule": "poly", "workers": loader_workers(options.device, options.cpu_count),
                  "val_every": val_every})  # fmt: skip
    if val_max is not None:
        train["val_max_cases"] = val_max
    metrics = list(BASE_METRICS) + (list(plan_checks.LESION_METRICS) if add_lesion else [])
    evaluation: dict[str, Any] = {
        "metrics": metrics,
        "nsd_tolerance": round(max(1.0, max(layout.spacing)), 3),
    }
    if not classes.contiguous and not classes.regions:
        evaluation["labels"] = list(classes.values)
    return {
        "name": experiment_name(options.name, fp),
        "seed": 0,
        **(
            {"regions": {k: list(v) for k, v in classes.regions.items()}} if classes.regions else {}
        ),
        "data": {
            "root": options.root,
            "val_fraction": 0.2,
            "patch_size": patch,
            "foreground_fraction": 0.33,
            "normalization": rules.normalization_for(
                [
                    rules.ct_like(c.name, c.integer_valued, c.minimum_image)[0]
                    for c in fp.intensities
                ]  # fmt: skip
            ),
            "spacing": None if layout.all_same else [round(s, 6) for s in layout.spacing],
            "augment": dict(augment),
        },
        "model": model,
        "loss": {"name": "dice_ce"},
        "train": train,
        "inference": {
            "overlap": 0.5,
            "blend": "gaussian",
            "batch_size": 4 if not is_cuda(options.device) else 8,
            "tta": False,
            "pad_mode": "minimum",
        },  # fmt: skip
        "evaluation": evaluation,
        "output": "runs",
    }


def loader_workers(device: str, cpu_count: int) -> int:
    """``train.workers`` of a planned spec: up to 8 on a GPU machine; 2 on a CPU, whose cores
    the training step needs too."""
    return min(8, cpu_count) if is_cuda(device) else 2


def experiment_name(name: str | None, fp: Fingerprint) -> str:
    """``name``, else the dataset folder's name made safe for a run folder."""
    if name:
        return name
    base = Path(fp.root).resolve().name or "experiment"
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip(".-") or "experiment"
    return cleaned


def usable_regions(fp: Fingerprint) -> dict[str, tuple[int, ...]]:
    """dataset.json's nnU-Net regions when segcli can train and decode them, else ``{}``."""
    if not fp.regions or region_problems(as_regions(fp.regions), list(fp.regions)):
        return {}
    return dict(fp.regions)


def receptive_field(spec: dict[str, Any]) -> tuple[int, ...]:
    """Analytic receptive field of the planned U-Net at its patch size (voxels per axis)."""
    from segcli.config.schema import UNetSpec
    from segcli.models import field_graph
    from segcli.receptive_field import analyse

    model = UNetSpec.model_validate(spec["model"])
    report = analyse(field_graph(model), spec["data"]["patch_size"])
    return tuple(int(v) for v in report.receptive_field)
