"""From a fingerprint to a spec: nnU-Net v2's rules, fitted to a time budget, every step explained.

    >>> from segcli.plan.planner import PlanOptions, make_plan
    >>> plan = make_plan(fingerprint, PlanOptions(root="data/hippo", device="cpu"))
    >>> plan.spec["data"]["patch_size"], [d.name for d in plan.decisions]

:func:`make_plan` reads like the table ``segcli plan`` prints: one small ``decide_*`` function
per row (dimensionality, spacing, median shape, classes, patch, pooling, kernels, filters,
batch, normalisation, loss, sampling, augmentation, optimiser, schedule, metrics, NSD
tolerance), each returning its value and its :class:`~segcli.plan.decision.Decision`, called
in order.  Sizing
the network for memory and for the time budget lives in :mod:`segcli.plan.sizing`, the spec
mapping in :mod:`segcli.plan.spec`.

It is pure apart from the optional ``measure`` and ``augment_costs`` callbacks, through which
the engine times real training steps of a candidate spec and the augmentation transforms
(:mod:`segcli.engine.plan`); without them there is no budget and the schedule is the default
one.  The result, :class:`Plan`, holds the spec as a plain
mapping (validated by the writer through :func:`segcli.config.from_dict`), the Decision rows
and the :class:`~segcli.plan.decision.Check` rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from segcli.errors import SpecError
from segcli.labels import as_regions, region_problems
from segcli.plan import budget as budget_rules
from segcli.plan import checks as plan_checks
from segcli.plan import rules
from segcli.plan.budget import Schedule
from segcli.plan.decision import Check, Decision, fmt_shape, fmt_spacing
from segcli.plan.fingerprint import Fingerprint, label_summary
from segcli.plan.sizing import (
    ESTIMATE_FILTERS,
    AugmentCosts,
    Candidate,
    Layout,
    Measure,
    MemoryFit,
    Sizing,
    default_sizing,
    fit_to_memory,
    is_cuda,
    planned_batch,
    size_for_budget,
    val_count,
)
from segcli.plan.spec import (
    Classes,
    Network,
    build_spec,
    loader_workers,
    receptive_field,
    usable_regions,
)

__all__ = ["Candidate", "Plan", "PlanOptions", "make_plan"]

#: patches drawn per training case from which nnU-Net's augmentation is planned: fewer passes
#: over the data cannot learn the cases by heart, and heavy augmentation slows a short schedule.
#: Measured on Hippocampus (docs/results.md, make small-data: 1,280 steps of batch 2, preset
#: without mirroring against none): 256 patches per case +0.014 Dice, 128 −0.002, 64 −0.007
AUGMENT_FROM_PASSES = 150
#: the share of the loader workers' time that augmentation may take on a CPU, whose cores
#: the training step also uses
CPU_AUGMENT_SHARE = 0.1
#: optimiser: nnU-Net's SGD for long schedules; AdamW 3e-3 + poly for short ones (the
#: hand-tuned Hippocampus CPU spec, docs/results.md)
SGD_FROM_ITERATIONS = 25_000


@dataclass(frozen=True)
class PlanOptions:
    """What the user asked for (``segcli plan`` flags).

    Attributes:
        root: ``data.root`` as it goes into the spec.
        name: experiment name (None: from the dataset folder).
        dims: ``auto``, ``2`` or ``3``.
        budget_minutes: wall clock for ``segcli train`` (None: the default schedule).
        device: the resolved device (``cpu``, ``cuda``, ``cuda:1`` ...).
        gpu_memory_gb: memory target for the patch/batch rule (None: 8 GB, nnU-Net's default).
        cpu_count: CPU cores (data-loader workers).
        device_here: ``device`` is on this machine (False: planned from the rules alone).
    """

    root: str
    name: str | None = None
    dims: str = "auto"
    budget_minutes: float | None = None
    device: str = "cpu"
    gpu_memory_gb: float | None = None
    cpu_count: int = 2
    device_here: bool = True


@dataclass(frozen=True)
class Plan:
    """The planned spec (a plain mapping), the decisions and the checks."""

    spec: dict[str, Any]
    decisions: tuple[Decision, ...]
    checks: tuple[Check, ...]
    schedule: Schedule | None = None
    candidates: tuple[Candidate, ...] = ()
    header: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "decisions": [d.to_dict() for d in self.decisions],
            "checks": [c.to_dict() for c in self.checks],
            "budget": None
            if self.schedule is None
            else {
                "epochs": self.schedule.epochs,
                "iterations_per_epoch": self.schedule.iterations_per_epoch,
                "predicted_seconds": round(self.schedule.predicted_seconds, 1),
                "train_seconds": round(self.schedule.train_seconds, 1),
                "validation_seconds": round(self.schedule.validation_seconds, 1),
                "fixed_seconds": round(self.schedule.fixed_seconds, 1),
                "candidates": [
                    {
                        "filters": c.filters,
                        "patch": list(c.patch),
                        "batch": c.batch,
                        "step_seconds": None
                        if c.measurement is None
                        else round(c.measurement.step_seconds, 4),
                        "iterations": None if c.schedule is None else c.schedule.iterations,
                    }
                    for c in self.candidates
                ],
            },
        }


# --------------------------------------------------------------------------- the plan


def make_plan(
    fp: Fingerprint,
    options: PlanOptions,
    measure: Measure | None = None,
    augment_costs: AugmentCosts | None = None,
) -> Plan:
    """Plan an experiment for the dataset described by ``fp``.

    Args:
        fp: the dataset fingerprint.
        options: the user's choices.
        measure: times a candidate spec on the planning device; required when
            ``options.budget_minutes`` is set.
        augment_costs: times each augmentation transform of a ``data.augment`` mapping on a
            patch (seconds per firing, a loader worker's one thread); with a budget, the set
            is cut to what the loader workers can afford beside the training step.

    Raises:
        SpecError: ``--dims 3`` for 2D data.
        SegcliError: the budget is too small for even the smallest network.
    """
    n_cases = len(fp.cases)
    (plan_dims, slice_mode), dims_row = decide_dimensionality(fp, options)
    (spacing, all_same), spacing_row = decide_spacing(fp)
    median_shape, median_row = decide_median_shape(fp, spacing)
    layout = Layout(plan_dims, slice_mode, spacing, all_same, median_shape)
    classes, classes_row = decide_classes(fp)

    # width, patch and batch: nnU-Net's memory rule, then the time budget
    fit = fit_to_memory(layout, classes.num_classes, n_cases, options.device,
                        options.gpu_memory_gb)  # fmt: skip
    batch = planned_batch(fit, plan_dims, options.device)
    flip, flip_rule = rules.mirroring(classes.labels.values())

    def spec_for(filters: int, t: rules.Topology, b: int, sched: tuple[int, int, int]) -> dict:
        # candidates are timed with the light set: the loader's share is checked apart
        # (decide_augmentation), since a worker that keeps up adds nothing to the step
        return build_spec(fp, options, layout, classes, Network(t, filters, b), sched,
                          augment=light_augment(flip))  # fmt: skip

    if options.budget_minutes is None:
        sizing = default_sizing(fit.topology, options.device)
    else:
        if measure is None:
            raise ValueError("a budget needs a measure callback")
        sizing = size_for_budget(fit.topology, layout, batch, options.budget_minutes,
                                 options.device, n_cases, measure, spec_for)  # fmt: skip
    topo = sizing.topology
    augment, augment_row = decide_augmentation(
        layout, sizing, batch, n_cases, flip, flip_rule, options, augment_costs
    )
    normalization, norm_row, norm_checks = decide_normalization(fp)
    optim, optim_row = decide_optimizer(sizing.schedule_tuple)
    decisions = [
        dims_row,
        spacing_row,
        median_row,
        classes_row,
        decide_patch(layout, fit, sizing),
        decide_pooling(layout, topo),
        decide_kernels(layout, topo),
        decide_filters(layout, sizing, plan_dims),
        decide_batch(fit, batch, plan_dims, options.device),
        norm_row,
        decide_loss(),
        decide_sampling(),
        augment_row,
        optim_row,
        decide_schedule(sizing),
    ]

    # the spec, and the lecture's checks on it
    summaries = label_summary(fp, spacing)
    small_checks, add_lesion = plan_checks.small_structure_checks(summaries)
    spec = build_spec(fp, options, layout, classes, Network(topo, sizing.filters, batch),
                      sizing.schedule_tuple, sizing.val_max, add_lesion, optim,
                      augment=augment)  # fmt: skip
    assert spec["data"]["normalization"] == normalization
    field_size = receptive_field(spec)
    decisions.append(decide_metrics(spec, add_lesion))
    decisions.append(decide_nsd_tolerance(spec))
    found = [*sizing.checks, *norm_checks]
    found.extend(plan_checks.receptive_field_checks(field_size, spec["data"]["patch_size"],
                                                    summaries))  # fmt: skip
    found.extend(plan_checks.imbalance_checks(summaries))
    found.extend(small_checks)
    found.extend(compromise_checks(layout, topo, n_cases))
    if not options.device_here:
        found.append(
            Check(
                "device absent",
                "note",
                f"{options.device} is not on this machine: planned from nnU-Net's rules and the "
                f"{fit.gpu_gb:g} GB memory target (--gpu-memory) alone, as nnU-Net plans; no "
                "step was timed",
                {"gpu_memory_gb": fit.gpu_gb},
            )
        )
    header = (
        f"planned by segcli plan from {fp.root} ({n_cases} cases, {len(fp.channels)} channel(s): "
        f"{', '.join(fp.channels)})",
        f"device {options.device}"
        + (f", budget {options.budget_minutes:g} min" if options.budget_minutes else ", no budget")
        + f", receptive field {fmt_shape(field_size)}",
    )
    return Plan(spec, tuple(decisions), tuple(found), sizing.schedule, sizing.candidates, header)


# --------------------------------------------------------------------------- the decisions


def decide_dimensionality(
    fp: Fingerprint, options: PlanOptions
) -> tuple[tuple[int, bool], Decision]:
    """``(plan_dims, slice_mode)``: the data's axes, or slices of 3D data under ``--dims 2``."""
    data_dims = fp.dims
    if options.dims not in ("auto", "2", "3"):
        raise SpecError(f"--dims {options.dims}: choose auto, 2 or 3")
    if options.dims == "3" and data_dims == 2:
        raise SpecError(f"--dims 3: the images of {fp.root} are 2D (one slice); use --dims 2")
    slice_mode = options.dims == "2" and data_dims == 3
    plan_dims = 2 if (data_dims == 2 or slice_mode) else 3
    if slice_mode:
        dims_rule = (
            "--dims 2 on 3D data: each slice (the last two axes) is a sample, as nnU-Net's 2d "
            "configuration; written as a 3D U-Net one voxel thick along z (kernel 1, no pooling)"
        )
    elif options.dims == "auto":
        dims_rule = f"the images have {data_dims} axes"
    else:
        dims_rule = f"--dims {options.dims}"
    row = Decision(
        "dimensionality", f"{plan_dims}D", dims_rule, {"data_dims": data_dims}, ("model.dims",)
    )
    return (plan_dims, slice_mode), row


def decide_spacing(fp: Fingerprint) -> tuple[tuple[tuple[float, ...], bool], Decision]:
    """``(spacing, all_same)``: nnU-Net's median spacing, or its anisotropy rule."""
    choice = rules.target_spacing(fp.spacings, [c.cropped_shape for c in fp.cases])
    spacing = choice.spacing
    all_same = all(np.allclose(c.spacing, spacing, rtol=1e-3, atol=1e-6) for c in fp.cases)
    if choice.anisotropic_axis is not None:
        rule = (
            f"median {fmt_spacing(choice.median)}, but axis {choice.anisotropic_axis} is more than "
            f"{rules.ANISOTROPY_THRESHOLD:g}× coarser with fewer than 1/3 of the voxels: its "
            f"10th percentile {choice.percentile10:.4g} mm instead (nnU-Net's anisotropy rule: keep "
            "the finer scans' resolution)"
        )
    else:
        rule = "median spacing per axis over the cases (nnU-Net)"
    rule += (
        "; every case already has it, so no resampling (data.spacing: null)"
        if all_same
        else "; cases are resampled to it (cubic images, one-hot linear labels)"
    )
    row = Decision(
        "target spacing",
        fmt_spacing(spacing),
        rule,
        {"spacing": list(spacing), "median": list(choice.median), "resample": not all_same},
        ("data.spacing",),
    )
    return (spacing, all_same), row


def decide_median_shape(
    fp: Fingerprint, spacing: tuple[float, ...]
) -> tuple[tuple[float, ...], Decision]:
    """The median shape at the target spacing of the cases cropped to their nonzero region."""
    shapes = [rules.resampled_shape(c.shape, c.spacing, spacing) for c in fp.cases]
    cropped = [rules.resampled_shape(c.cropped_shape, c.spacing, spacing) for c in fp.cases]
    median_whole = tuple(float(v) for v in np.median(shapes, axis=0))
    # segcli trains on the cases cropped to their nonzero region (data.crop_nonzero), as
    # nnU-Net does: plan on the cropped shape
    median_shape = tuple(float(v) for v in np.median(cropped, axis=0))
    row = Decision(
        "median shape",
        fmt_shape(median_shape),
        "median image shape at the target spacing over the cases, cropped to their nonzero "
        "region as training crops them (nnU-Net's crop)"
        + (
            ""
            if median_shape == median_whole
            else f"; the whole images' median is {fmt_shape(median_whole)}"
        ),
        {"median_shape": list(median_shape), "median_whole_shape": list(median_whole)},
    )
    return median_shape, row


def decide_classes(fp: Fingerprint) -> tuple[Classes, Decision]:
    """The outputs: one softmax class per label value, or dataset.json's regions."""
    values = fp.label_values
    num_classes = max(values, default=0) + 1
    contiguous = list(values) == list(range(1, num_classes))
    labels_map = {0: fp.label_names.get(0, "background")}
    labels_map.update({v: fp.label_names.get(v, f"label{v}") for v in values})
    class_rule = (
        f"{len(values)} foreground label(s) from "
        + ("dataset.json" if fp.labels_declared else "the label maps")
        + (
            ""
            if contiguous
            else f"; values are sparse (up to {num_classes - 1}), so the network "
            f"has {num_classes} outputs and evaluation.labels lists the {len(values)} used"
        )  # fmt: skip
    )
    regions = usable_regions(fp)
    if regions:
        class_rule = (
            "dataset.json defines nnU-Net regions "
            + ", ".join(f"{k}={list(v)}" for k, v in regions.items())
            + ": one sigmoid channel per region, in the file's order (outer first; a later "
            "region is drawn over an earlier one when the prediction is written as labels), "
            "as nnU-Net trains them"
        )
    elif fp.regions:
        class_rule += (
            "; dataset.json's regions "
            + ", ".join(f"{k}={list(v)}" for k, v in fp.regions.items())
            + " cannot be decoded back into labels ("
            + "; ".join(region_problems(as_regions(fp.regions), list(fp.regions)))
            + "): trained as the underlying label values (softmax) instead"
        )
    row = Decision(
        "classes",
        f"{len(regions)} regions" if regions else str(num_classes),
        class_rule,
        {
            "labels": {str(k): v for k, v in labels_map.items()},
            "regions": {k: list(v) for k, v in regions.items()},
        },
        ("regions", "model.classes")
        if regions
        else ("model.labels" if contiguous else "model.classes",),
    )
    return Classes(num_classes, contiguous, labels_map, values, regions), row


def decide_patch(layout: Layout, fit: MemoryFit, sizing: Sizing) -> Decision:
    """nnU-Net's patch for the memory target, CPU rounding, budget shrinking."""
    topo = sizing.topology
    divisor_note = "×".join(f"2^{p}" for p in topo.pools_per_axis)
    median = tuple(round(v) for v in layout.plan_median)
    patch_rule = f"median shape {fmt_shape(median)} (nnU-Net: at most a 256³/2048² box), "
    if fit.rounded_nearest:
        padding = 1.0 - float(np.prod(median)) / float(np.prod(fit.up_patch))
        patch_rule += (
            f"rounded to the nearest multiple of {divisor_note} per axis (CPU: nnU-Net's "
            f"rounding up to {fmt_shape(fit.up_patch)} makes {padding:.0%} of each step padding "
            "for a median case, and a CPU's step time grows with the voxels)"
        )
    else:
        patch_rule += f"rounded up to a multiple of {divisor_note} per axis"
    if fit.shrinks:
        patch_rule += f"; shrunk {fit.shrinks}× to fit {fit.gpu_gb:g} GB (feature-map estimate)"
    patch_rule += (
        f"; feature maps {fit.estimate / 1e6:.1f} M voxels per sample at {ESTIMATE_FILTERS} "
        f"filters vs {fit.reference / 1e6:.0f} M for {fit.gpu_gb:g} GB at batch {fit.ref_batch}"
    )
    if sizing.candidates and topo.patch != sizing.candidates[0].patch:
        patch_rule += (
            f"; then shrunk to {fmt_shape(topo.patch)} so that the 8-filter network trains "
            f"≥ {budget_rules.MIN_GOOD_PATCH_ITERATIONS:,} steps in the budget"
        )
    final_patch = layout.embed(topo.patch, 1)
    return Decision(
        "patch size",
        fmt_shape(final_patch),
        patch_rule,
        {
            "patch": final_patch,
            "feature_map_voxels": int(fit.estimate),
            "reference": fit.reference,
            "shrink_steps": fit.shrinks,
        },
        ("data.patch_size",),
    )


def decide_pooling(layout: Layout, topo: rules.Topology) -> Decision:
    strides_full = [layout.embed(s, 1) for s in topo.strides]
    pool_rule = (
        f"pool an axis while its feature map stays ≥ {rules.MIN_FEATURE_MAP_EDGE} voxels and its "
        "spacing is < 2× the finest (nnU-Net); "
        f"poolings per axis {fmt_shape(layout.embed(topo.pools_per_axis, 0))}"
    )
    return Decision(
        "pooling",
        f"depth {topo.depth}: " + " ".join(fmt_shape(s) for s in strides_full),
        pool_rule,
        {"strides": strides_full},
        ("model.depth", "model.strides"),
    )


def decide_kernels(layout: Layout, topo: rules.Topology) -> Decision:
    kernels_full = [layout.embed(k, 1) for k in topo.kernel_sizes]
    return Decision(
        "kernels",
        " ".join(fmt_shape(k) for k in kernels_full),
        "3 per axis, but 1 along an axis whose spacing is still > 2× the finest at that "
        "stage (nnU-Net: no spatial context across coarse slices); 3 in the bottleneck",
        {"kernel_sizes": kernels_full},
        ("model.kernel_sizes", "model.convs_per_block"),
    )


def decide_filters(layout: Layout, sizing: Sizing, plan_dims: int) -> Decision:
    widths = rules.stage_widths(sizing.filters, sizing.topology.depth + 1, layout.cap)
    return Decision(
        "filters",
        "→".join(map(str, widths)),
        f"{sizing.filters} in the first stage, doubling per stage, capped at {layout.cap} "
        f"(nnU-Net's {layout.cap} in {plan_dims}D); " + sizing.width_rule,
        {"filters": sizing.filters, "widths": list(widths)},
        ("model.filters", "model.max_filters"),
    )


def decide_batch(fit: MemoryFit, batch: int, plan_dims: int, device: str) -> Decision:
    batch_rule = (
        f"nnU-Net: memory headroom × reference batch {fit.ref_batch} = {fit.from_memory}, at "
        f"most 5 % of the dataset's voxels per batch ({fit.covered}), at least {rules.MIN_BATCH}"
        if is_cuda(device)
        else (
            f"CPU: time, not memory, limits; nnU-Net's minimum batch {rules.MIN_BATCH} (3D)"
            if plan_dims == 3
            else f"CPU: nnU-Net's memory rule ({fit.mem_batch}) capped at its 2D reference "
            f"batch {rules.REFERENCE_BATCH_2D}"
        )
    )
    return Decision("batch size", str(batch), batch_rule, {"batch": batch}, ("train.batch_size",))


def decide_normalization(fp: Fingerprint) -> tuple[str, Decision, list[Check]]:
    """nnU-Net's CTNormalization for CT channels, else z-score per volume."""
    flags, why = [], []
    found: list[Check] = []
    for channel in fp.intensities:
        is_ct, reason = rules.ct_like(channel.name, channel.integer_valued, channel.minimum_image)
        flags.append(is_ct)
        why.append(f"{channel.name}: {reason}" if is_ct else f"{channel.name}: not CT")
    normalization = rules.normalization_for(flags)
    stats = fp.intensities
    if normalization == "ct_auto":
        norm_rule = (
            "CT: clip to the foreground's 0.5–99.5 percentiles, z-score with the foreground mean "
            "and std (nnU-Net's CTNormalization; training recomputes them on its split): "
            + "; ".join(
                f"{c.name} [{c.percentile_00_5:.0f}, {c.percentile_99_5:.0f}] mean "
                f"{c.mean:.1f} std {c.std:.1f}"
                for c in stats
            )
        )
    else:
        norm_rule = "z-score per volume and channel (nnU-Net's default for non-CT)"
        if any(flags):
            norm_rule += "; some channels are CT but segcli uses one scheme for all channels"
            found.append(Check("compromise: normalization", "note",
                               "mixed CT and non-CT channels: every channel is z-scored per "
                               "volume", {}))  # fmt: skip
    norm_rule += " (" + "; ".join(why) + ")"
    row = Decision(
        "normalization",
        normalization,
        norm_rule,
        {"channels": [c.__dict__ for c in stats]},
        ("data.normalization",),
    )
    return normalization, row, found


def decide_loss() -> Decision:
    return Decision(
        "loss",
        "dice_ce",
        "Dice + cross-entropy, deep supervision at every decoder "
        "stage (nnU-Net); copes with imbalance, see the checks",
        {},
        ("loss", "model.deep_supervision"),
    )


def decide_sampling() -> Decision:
    return Decision(
        "sampling",
        "foreground 33 %",
        "a third of the patches centred on a foreground voxel (nnU-Net's "
        "oversample_foreground_percent 0.33)",
        {"foreground_fraction": 0.33},
        ("data.foreground_fraction",),
    )


def light_augment(flip: bool) -> dict[str, Any]:
    """The light set: flips (unless the labels are sided) and the simple intensity change."""
    return {"flip": flip, "rotate90": False, "intensity": True, "probability": 0.5}


def decide_augmentation(
    layout: Layout,
    sizing: Sizing,
    batch: int,
    n_cases: int,
    flip: bool,
    flip_rule: str,
    options: PlanOptions,
    augment_costs: AugmentCosts | None,
) -> tuple[dict[str, Any], Decision]:
    """nnU-Net's augmentation when each training case is seen often enough to be learned by
    heart, the light set when the schedule passes over the cases only a few times; under a
    budget cut to what the loader workers can afford beside the training step."""
    from segcli.config.schema import AugmentSpec
    from segcli.data.augment.cost import (
        SIMPLE,
        expected_cost,
        fit_to_allowance,
        per_patch_allowance,
    )

    train_cases = max(1, n_cases - val_count(n_cases))
    epochs, per_epoch, _ = sizing.schedule_tuple
    passes = epochs * per_epoch * batch / train_cases
    if passes < AUGMENT_FROM_PASSES:
        augment = light_augment(flip)
        rule = (
            f"the schedule draws {passes:.0f} patches per training case (< "
            f"{AUGMENT_FROM_PASSES}): too few passes to learn the cases by heart, so the light "
            f"set ({'flips, ' if flip else ''}intensity) instead of nnU-Net's, which slows a "
            "short schedule down (docs/results.md, small data)"
        )
    else:
        augment = {"preset": "nnunet", "flip": flip, "intensity": False}
        rule = (
            f"the schedule draws {passes:.0f} patches per training case (≥ "
            f"{AUGMENT_FROM_PASSES}): nnU-Net v2's augmentation (rotation and scaling — in-plane "
            "only when one axis is much coarser —, noise, blur, brightness, contrast, "
            "low resolution, gamma; elastic off) against learning them by heart"
        )
    numbers: dict[str, Any] = {"passes_per_case": round(passes, 1)}
    candidate = sizing.candidates[-1] if sizing.candidates else None
    measured = candidate.measurement if candidate is not None else None
    if "preset" in augment and augment_costs is not None and measured is not None:
        workers = loader_workers(options.device, options.cpu_count)
        spec = AugmentSpec.model_validate(augment)
        costs = augment_costs(augment, layout.embed(sizing.topology.patch, 1), layout.spacing)
        allowance = per_patch_allowance(measured.step_seconds, batch, workers)
        if not is_cuda(options.device):
            # a CPU's loader workers share its cores with the step: what they spend is time
            # the step does not get, so only a small share is affordable
            allowance *= CPU_AUGMENT_SHARE
        full = expected_cost(spec, costs)
        reduced, dropped = fit_to_allowance(spec, costs, allowance)
        numbers.update(
            {
                "ms_per_patch": round(full * 1e3, 2),
                "allowance_ms": round(allowance * 1e3, 2),
                "dropped": dropped,
            }  # fmt: skip
        )
        rule += (
            f"; the set costs {full * 1e3:.1f} ms per patch on this machine against "
            f"{allowance * 1e3:.1f} ms the {workers} loader workers can afford beside a "
            f"{measured.step_seconds:.3f} s step of batch {batch}"
        )
        if dropped:
            for name in dropped:
                augment[name] = False if name in SIMPLE else None
            rule += (
                f": the dearest left out ({', '.join(dropped)}), the cheap ones kept "
                f"({expected_cost(reduced, costs) * 1e3:.1f} ms)"
            )
        else:
            rule += ": all kept"
    rule += f"; {flip_rule}"
    value = "nnU-Net's" if "preset" in augment else "light"
    dropped_names = [k for k, v in augment.items() if v is None or (k == "flip" and not v)]
    if dropped_names and "preset" in augment:
        value += " without " + ", ".join(dropped_names)
    elif not flip:
        value += ", no flips"
    return augment, Decision("augmentation", value, rule, numbers, ("data.augment",))


def decide_optimizer(sched: tuple[int, int, int]) -> tuple[dict[str, Any], Decision]:
    """nnU-Net's SGD for long schedules, AdamW for the short ones a budget allows."""
    total_iters = sched[0] * sched[1]
    if total_iters >= SGD_FROM_ITERATIONS:
        optim = {"optimizer": "sgd", "lr": 0.01, "momentum": 0.99, "nesterov": True,
                 "weight_decay": 3e-5}  # fmt: skip
        opt_rule = "nnU-Net's SGD 0.01, Nesterov momentum 0.99, poly decay (long schedule)"
    else:
        optim = {"optimizer": "adamw", "lr": 0.003, "weight_decay": 1e-4}
        opt_rule = (
            f"{total_iters:,} steps < {SGD_FROM_ITERATIONS:,}: AdamW 3e-3 with poly decay, which "
            "converges in a few thousand steps (the hand-tuned Hippocampus spec); nnU-Net's SGD "
            "0.01 is tuned for 250,000"
        )
    row = Decision("optimizer", f"{optim['optimizer']} lr {optim['lr']:g} poly", opt_rule,
                   dict(optim), ("train.optimizer", "train.lr"))  # fmt: skip
    return optim, row


def decide_schedule(sizing: Sizing) -> Decision:
    epochs, per_epoch, val_every = sizing.schedule_tuple
    val_max = sizing.val_max
    return Decision(
        "schedule",
        f"{epochs} epochs × {per_epoch} iterations, validate every {val_every}"
        + (f" on {val_max} cases" if val_max else ""),
        sizing.schedule_rule,
        {
            "epochs": epochs,
            "iterations_per_epoch": per_epoch,
            "val_every": val_every,
            "val_max_cases": val_max,
        },
        ("train.epochs", "train.iterations_per_epoch", "train.val_every"),
    )


def decide_metrics(spec: dict[str, Any], add_lesion: bool) -> Decision:
    metrics = spec["evaluation"]["metrics"]
    return Decision(
        "metrics",
        ", ".join(metrics),
        "overlap, distances and volumes"
        + (
            "; lesion-wise detection added for small structures (see the checks)"
            if add_lesion
            else ""
        ),  # fmt: skip
        {"metrics": metrics},
        ("evaluation.metrics",),
    )


def decide_nsd_tolerance(spec: dict[str, Any]) -> Decision:
    tol = spec["evaluation"]["nsd_tolerance"]
    return Decision(
        "nsd tolerance",
        f"{tol:g} mm",
        "one voxel along the coarsest axis, at least "
        "1 mm: a tolerance below the voxel size only counts exact boundary matches",
        {"nsd_tolerance": tol},
        ("evaluation.nsd_tolerance",),
    )


def compromise_checks(layout: Layout, topo: rules.Topology, n_cases: int) -> list[Check]:
    """Where the plan gives something up: a patch smaller than the data, too few cases."""
    found: list[Check] = []
    plan_median = layout.plan_median
    short = [a for a, (p, m_) in enumerate(zip(topo.patch, plan_median, strict=True)) if p < m_]
    if short:
        found.append(
            Check(
                "compromise: patch",
                "note",
                f"patch {fmt_shape(topo.patch)} is smaller than the median shape "
                f"{fmt_shape(tuple(round(v) for v in plan_median))} along axis "
                f"{', '.join(map(str, short))}: inference slides windows over each image",
                {"patch": list(topo.patch), "median_shape": list(plan_median)},
            )  # fmt: skip
        )
    if n_cases < 2:
        found.append(
            Check(
                "compromise: validation",
                "warning",
                f"{n_cases} labelled case: no validation split is possible, the last epoch's "
                "weights are kept; this dataset is too small to train a useful model",
                {},
            )  # fmt: skip
        )
    return found
