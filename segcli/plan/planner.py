"""From a fingerprint to a spec: nnU-Net v2's rules, fitted to a time budget, every step explained.

    >>> from segcli.plan.planner import PlanOptions, make_plan
    >>> plan = make_plan(fingerprint, PlanOptions(root="data/hippo", device="cpu"))
    >>> plan.spec["data"]["patch_size"], [d.name for d in plan.decisions]

:func:`make_plan` is pure apart from the optional ``measure`` callback, through which the engine
times real training steps of a candidate spec (:mod:`segcli.engine.plan`); without it there is
no budget and the schedule is the default one.  The result, :class:`Plan`, holds the spec as a
plain mapping (validated by the writer through :func:`segcli.config.from_dict`), the
:class:`~segcli.plan.decision.Decision` rows and the :class:`~segcli.plan.decision.Check` rows.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from segcli.errors import SegcliError, SpecError
from segcli.labels import as_regions, region_problems
from segcli.plan import budget as budget_rules
from segcli.plan import checks as plan_checks
from segcli.plan import rules
from segcli.plan.budget import Measurement, Schedule
from segcli.plan.decision import Check, Decision, fmt_shape, fmt_spacing
from segcli.plan.fingerprint import Fingerprint, label_summary

__all__ = ["Candidate", "Plan", "PlanOptions", "make_plan"]

#: filters of the first stage tried under a budget, widest first (nnU-Net uses 32)
WIDTHS = (32, 16, 8)
#: the first stage's filters of nnU-Net's memory estimate (its 3d_fullres width)
ESTIMATE_FILTERS = 32
#: the schedule without --budget-minutes: a quarter of nnU-Net's 1000 × 250 on a GPU, and
#: 100 × 100 steps of the narrow CPU network on a CPU
DEFAULT_SCHEDULE_GPU = (250, 250)
DEFAULT_SCHEDULE_CPU = (100, 100)
#: optimiser: nnU-Net's SGD for long schedules; AdamW 3e-3 + poly for short ones (the
#: hand-tuned Hippocampus CPU spec, docs/results.md)
SGD_FROM_ITERATIONS = 25_000
BASE_METRICS = ["dice", "iou", "hd95", "assd", "masd", "nsd", "vol_ref", "vol_pred"]

#: ``measure(spec) -> Measurement``: time a candidate spec on the planning device
Measure = Callable[[dict[str, Any]], Measurement]


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
    """

    root: str
    name: str | None = None
    dims: str = "auto"
    budget_minutes: float | None = None
    device: str = "cpu"
    gpu_memory_gb: float | None = None
    cpu_count: int = 2


@dataclass(frozen=True)
class Candidate:
    """One network/patch/batch the budget search considered, with its measurement."""

    filters: int
    patch: tuple[int, ...]
    batch: int
    measurement: Measurement | None
    schedule: Schedule | None


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


# --------------------------------------------------------------------------- helpers


def _name(options: PlanOptions, fp: Fingerprint) -> str:
    if options.name:
        return options.name
    from pathlib import Path

    base = Path(fp.root).resolve().name or "experiment"
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip(".-") or "experiment"
    return cleaned


def _is_cuda(device: str) -> bool:
    return device.startswith("cuda")


def _schema_has_strides() -> bool:
    from segcli.config.schema import UNetSpec

    return "strides" in UNetSpec.model_fields and "kernel_sizes" in UNetSpec.model_fields


def _embed(values: tuple[int, ...], slice_mode: bool, fill: int) -> list[int]:
    return [fill, *values] if slice_mode else list(values)


# --------------------------------------------------------------------------- the plan


def make_plan(fp: Fingerprint, options: PlanOptions, measure: Measure | None = None) -> Plan:
    """Plan an experiment for the dataset described by ``fp``.

    Args:
        fp: the dataset fingerprint.
        options: the user's choices.
        measure: times a candidate spec on the planning device; required when
            ``options.budget_minutes`` is set.

    Raises:
        SpecError: ``--dims 3`` for 2D data, or a plan this segcli's U-Net cannot express.
        SegcliError: the budget is too small for even the smallest network.
    """
    decisions: list[Decision] = []
    found: list[Check] = []
    data_dims = fp.dims
    n_cases = len(fp.cases)

    # ---- dimensionality
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
    decisions.append(
        Decision(
            "dimensionality", f"{plan_dims}D", dims_rule, {"data_dims": data_dims}, ("model.dims",)
        )  # fmt: skip
    )

    # ---- target spacing
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
    decisions.append(
        Decision(
            "target spacing",
            fmt_spacing(spacing),
            rule,
            {"spacing": list(spacing), "median": list(choice.median), "resample": not all_same},
            ("data.spacing",),
        )  # fmt: skip
    )

    # ---- median shape at the target spacing (segcli trains on uncropped images)
    shapes = [rules.resampled_shape(c.shape, c.spacing, spacing) for c in fp.cases]
    cropped = [rules.resampled_shape(c.cropped_shape, c.spacing, spacing) for c in fp.cases]
    median_whole = tuple(float(v) for v in np.median(shapes, axis=0))
    # segcli trains on the cases cropped to their nonzero region (data.crop_nonzero), as
    # nnU-Net does: plan on the cropped shape
    median_shape = tuple(float(v) for v in np.median(cropped, axis=0))
    dataset_voxels = float(np.prod(median_shape)) * n_cases
    decisions.append(
        Decision(
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
    )
    plan_spacing = spacing[1:] if slice_mode else spacing
    plan_median = median_shape[1:] if slice_mode else median_shape

    # ---- labels / classes
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
    regions = _usable_regions(fp)
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
    decisions.append(
        Decision(
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
        )  # fmt: skip
    )

    # ---- nnU-Net's network and patch for the memory target
    cap = 320 if plan_dims == 3 else 512
    gpu_gb = options.gpu_memory_gb if options.gpu_memory_gb is not None else 8.0
    reference = rules.memory_reference(plan_dims, gpu_gb)
    ref_batch = rules.reference_batch(plan_dims)
    topo, estimate, shrinks = rules.fit_patch_to_memory(
        plan_spacing, plan_median, ESTIMATE_FILTERS, cap, num_classes, reference, ref_batch
    )
    fallback = not _schema_has_strides() and not (topo.uniform and not slice_mode)
    if fallback:
        if slice_mode:
            raise SpecError(
                "--dims 2 on 3D data needs a U-Net with per-axis strides (model.strides), "
                "which this segcli does not have"
            )
        found.append(
            Check(
                "compromise: pooling",
                "warning",
                f"nnU-Net's rule pools the axes {fmt_shape(topo.pools_per_axis)} times with "
                "1-wide kernels on coarse axes, but this segcli's U-Net pools every axis "
                f"alike: depth {min(topo.pools_per_axis)}, kernels 3",
                {},
            )  # fmt: skip
        )
        topo = _uniform(topo)
    # CPU: the nearest multiple of the divisor, not nnU-Net's next one (rules.nearest_patch)
    up_patch = topo.patch
    if not _is_cuda(options.device) and shrinks == 0:
        nearest = rules.nearest_patch(
            plan_spacing, rules.initial_patch(plan_spacing, plan_median), topo
        )
        topo = _uniform(nearest) if fallback else nearest
    rounded_nearest = topo.patch != up_patch
    if rounded_nearest:
        estimate = rules.topology_feature_maps(topo, ESTIMATE_FILTERS, cap, num_classes)
    mem_batch, from_memory, covered = rules.batch_size_for_memory(
        estimate, reference, ref_batch, topo.patch, dataset_voxels
    )

    # ---- width, patch and batch: the memory rule, then the time budget
    cuda = _is_cuda(options.device)
    candidates: list[Candidate] = []
    schedule: Schedule | None = None
    train_cases = n_cases - _val_count(n_cases)
    val_cases = _val_count(n_cases)
    if cuda:
        batch = mem_batch
    else:
        # CPU: time, not memory, is the limit; nnU-Net's minimum batch in 3D, its 2D reference
        batch = rules.MIN_BATCH if plan_dims == 3 else min(mem_batch, rules.REFERENCE_BATCH_2D)

    flip, flip_rule = rules.mirroring(labels_map.values())

    def spec_for(filters: int, t: rules.Topology, b: int, sched: tuple[int, int, int]) -> dict:
        return _spec(fp, options, plan_dims, slice_mode, spacing, all_same, t, filters, cap, b,
                     num_classes, contiguous, labels_map, values, sched, None, False,
                     flip=flip)  # fmt: skip

    width_rule: str
    if options.budget_minutes is None:
        filters = 32 if cuda else 8
        epochs, per_epoch = DEFAULT_SCHEDULE_GPU if cuda else DEFAULT_SCHEDULE_CPU
        val_every = max(1, math.ceil(epochs / budget_rules.VALIDATIONS))
        sched_tuple = (epochs, per_epoch, val_every)
        width_rule = (
            "nnU-Net's 32 filters (GPU, no budget)"
            if cuda
            else "no budget on a CPU: the narrow network (8 filters) of the hand-tuned "
            "Hippocampus spec (its time to Dice: docs/results.md); pass --budget-minutes to "
            "size it"
        )
        sched_rule = (
            f"no --budget-minutes: {epochs} epochs × {per_epoch} iterations"
            + (" (a quarter of nnU-Net's 1000 epochs)" if cuda else " (CPU default)")
            + f", validation every {val_every} epochs; --budget-minutes N fits it to N minutes"
        )
        val_max = None
    else:
        if measure is None:
            raise ValueError("a budget needs a measure callback")
        budget_s = options.budget_minutes * 60.0
        chosen: Candidate | None = None

        def candidate(width: int, t: rules.Topology) -> Candidate:
            m = measure(spec_for(width, t, batch, (1, 1, 1)))
            s = budget_rules.size_schedule(m, budget_s, train_cases, val_cases)
            return Candidate(width, t.patch, batch, m, s)

        # the narrowest first: when even it is short of steps, no wider one needs timing
        narrow = candidate(WIDTHS[-1], topo)
        assert narrow.schedule is not None
        if narrow.schedule.iterations >= budget_rules.ENOUGH_ITERATIONS:
            for width in WIDTHS[:-1]:  # widest first
                wide = candidate(width, topo)
                candidates.append(wide)
                assert wide.schedule is not None
                if wide.schedule.iterations >= budget_rules.ENOUGH_ITERATIONS:
                    chosen = wide
                    break
            candidates.append(narrow)
            chosen = chosen or narrow
        else:
            candidates.append(narrow)
        if chosen is None:
            # narrowest network still short of iterations: shrink the patch (nnU-Net's rule),
            # predicting the step time from the voxel count, down to half the median shape
            last = narrow
            assert last.measurement is not None
            t = topo
            floor = [max(1.0, m_ / 2) for m_ in plan_median]
            while True:
                smaller = rules.shrink_patch(t.patch, plan_median, plan_spacing)
                if smaller is None or any(p < f for p, f in zip(smaller, floor, strict=True)):
                    break
                t = rules.topology(plan_spacing, smaller)
                t = _uniform(t) if fallback else t
                ratio = float(np.prod(t.patch)) / float(np.prod(topo.patch))
                guess = Measurement(last.measurement.step_seconds * ratio,
                                    last.measurement.val_case_seconds,
                                    last.measurement.load_case_seconds,
                                    last.measurement.startup_seconds)  # fmt: skip
                if budget_rules.size_schedule(guess, budget_s, train_cases, val_cases).iterations \
                        >= budget_rules.MIN_GOOD_PATCH_ITERATIONS:  # fmt: skip
                    break
            if t.patch != topo.patch:
                candidates.append(candidate(WIDTHS[-1], t))
                topo = t
            chosen = candidates[-1]
        assert chosen.schedule is not None and chosen.measurement is not None
        if chosen.schedule.iterations < budget_rules.MIN_ITERATIONS:
            need = _minutes_needed(chosen.measurement, train_cases, val_cases)
            raise SegcliError(
                f"--budget-minutes {options.budget_minutes:g}: too small to train at all; even "
                f"the smallest network ({chosen.filters} filters, patch {fmt_shape(chosen.patch)}, "
                f"batch {chosen.batch}) gets only {chosen.schedule.iterations} of the "
                f"{budget_rules.MIN_ITERATIONS} iterations a U-Net needs to learn anything on "
                f"{options.device} ({chosen.measurement.step_seconds:.2f} s per step, "
                f"{chosen.schedule.fixed_seconds:.0f} s to load the data); give at least "
                f"{need:.1f} minutes"
            )
        filters = chosen.filters
        schedule = chosen.schedule
        sched_tuple = (schedule.epochs, schedule.iterations_per_epoch, schedule.val_every)
        val_max = schedule.val_max_cases
        tried = "; ".join(
            f"{c.filters} filters, patch {fmt_shape(c.patch)}: "
            f"{c.measurement.step_seconds:.3f} s/step → {c.schedule.iterations:,} steps"
            for c in candidates
            if c.measurement is not None and c.schedule is not None
        )
        width_rule = (
            f"the widest network that gets ≥ {budget_rules.ENOUGH_ITERATIONS:,} training steps "
            f"in the budget (of 32 (nnU-Net), 16, 8 filters; below that a smaller patch). "
            f"Measured on {options.device}: {tried}"
        )
        m = chosen.measurement
        sched_rule = (
            f"{options.budget_minutes:g} min × {budget_rules.SAFETY:.0%} = "
            f"{budget_s * budget_rules.SAFETY:.0f} s: {schedule.fixed_seconds:.0f} s start-up and "
            f"loading ({m.load_case_seconds:.3f} s/case), {schedule.validations} validations × "
            f"{val_max or val_cases} cases × {m.val_case_seconds:.2f} s = "
            f"{schedule.validation_seconds:.0f} s, {m.epoch_seconds:.2f} s of checkpoints and "
            "curves per epoch, the rest training at "
            f"{m.step_seconds:.3f} s/step → {schedule.iterations:,} steps = "
            f"{schedule.epochs} epochs × {schedule.iterations_per_epoch}; predicted wall clock "
            f"{schedule.predicted_seconds / 60:.1f} min"
        )
        if schedule.iterations < budget_rules.ENOUGH_ITERATIONS:
            found.append(
                Check(
                    "compromise: budget",
                    "warning",
                    f"only {schedule.iterations:,} training steps fit the budget (fewer than "
                    f"{budget_rules.ENOUGH_ITERATIONS:,}); expect a lower Dice than a longer run",
                    {"iterations": schedule.iterations},
                )
            )

    # patch / topology decisions
    divisor_note = "×".join(f"2^{p}" for p in topo.pools_per_axis)
    median = tuple(round(v) for v in plan_median)
    patch_rule = f"median shape {fmt_shape(median)} (nnU-Net: at most a 256³/2048² box), "
    if rounded_nearest:
        padding = 1.0 - float(np.prod(median)) / float(np.prod(up_patch))
        patch_rule += (
            f"rounded to the nearest multiple of {divisor_note} per axis (CPU: nnU-Net's "
            f"rounding up to {fmt_shape(up_patch)} makes {padding:.0%} of each step padding "
            "for a median case, and a CPU's step time grows with the voxels)"
        )
    else:
        patch_rule += f"rounded up to a multiple of {divisor_note} per axis"
    if shrinks:
        patch_rule += f"; shrunk {shrinks}× to fit {gpu_gb:g} GB (feature-map estimate)"
    patch_rule += (
        f"; feature maps {estimate / 1e6:.1f} M voxels per sample at {ESTIMATE_FILTERS} filters vs "
        f"{reference / 1e6:.0f} M for {gpu_gb:g} GB at batch {ref_batch}"
    )
    if candidates and topo.patch != candidates[0].patch:
        patch_rule += (
            f"; then shrunk to {fmt_shape(topo.patch)} so that the 8-filter network trains "
            f"≥ {budget_rules.MIN_GOOD_PATCH_ITERATIONS:,} steps in the budget"
        )
    final_patch = _embed(topo.patch, slice_mode, 1)
    decisions.append(
        Decision(
            "patch size",
            fmt_shape(final_patch),
            patch_rule,
            {
                "patch": final_patch,
                "feature_map_voxels": int(estimate),
                "reference": reference,
                "shrink_steps": shrinks,
            },
            ("data.patch_size",),
        )  # fmt: skip
    )
    strides_full = [_embed(s, slice_mode, 1) for s in topo.strides]
    kernels_full = [_embed(k, slice_mode, 1) for k in topo.kernel_sizes]
    pool_rule = (
        f"pool an axis while its feature map stays ≥ {rules.MIN_FEATURE_MAP_EDGE} voxels and its "
        "spacing is < 2× the finest (nnU-Net); "
        f"poolings per axis {fmt_shape(_embed(topo.pools_per_axis, slice_mode, 0))}"
    )
    decisions.append(
        Decision(
            "pooling",
            f"depth {topo.depth}: " + " ".join(fmt_shape(s) for s in strides_full),
            pool_rule,
            {"strides": strides_full},
            ("model.depth", "model.strides"),
        )  # fmt: skip
    )
    decisions.append(
        Decision(
            "kernels",
            " ".join(fmt_shape(k) for k in kernels_full),
            "3 per axis, but 1 along an axis whose spacing is still > 2× the finest at that "
            "stage (nnU-Net: no spatial context across coarse slices); 3 in the bottleneck",
            {"kernel_sizes": kernels_full},
            ("model.kernel_sizes", "model.convs_per_block"),
        )  # fmt: skip
    )
    widths = rules.stage_widths(filters, topo.depth + 1, cap)
    decisions.append(
        Decision(
            "filters",
            "→".join(map(str, widths)),
            f"{filters} in the first stage, doubling per stage, capped at {cap} "
            f"(nnU-Net's {cap} in {plan_dims}D); " + width_rule,
            {"filters": filters, "widths": list(widths)},
            ("model.filters", "model.max_filters"),
        )  # fmt: skip
    )
    batch_rule = (
        f"nnU-Net: memory headroom × reference batch {ref_batch} = {from_memory}, at most 5 % of "
        f"the dataset's voxels per batch ({covered}), at least {rules.MIN_BATCH}"
        if cuda
        else (
            f"CPU: time, not memory, limits; nnU-Net's minimum batch {rules.MIN_BATCH} (3D)"
            if plan_dims == 3
            else f"CPU: nnU-Net's memory rule ({mem_batch}) capped at its 2D reference batch "
            f"{rules.REFERENCE_BATCH_2D}"
        )
    )
    decisions.append(Decision("batch size", str(batch), batch_rule, {"batch": batch},
                              ("train.batch_size",)))  # fmt: skip

    # normalisation
    flags, why = [], []
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
    decisions.append(
        Decision(
            "normalization",
            normalization,
            norm_rule,
            {"channels": [c.__dict__ for c in stats]},
            ("data.normalization",),
        )  # fmt: skip
    )
    decisions.append(
        Decision(
            "loss",
            "dice_ce",
            "Dice + cross-entropy, deep supervision at every decoder "
            "stage (nnU-Net); copes with imbalance, see the checks",
            {},
            ("loss", "model.deep_supervision"),
        )  # fmt: skip
    )
    decisions.append(
        Decision(
            "sampling",
            f"foreground 33 %, {'flips, ' if flip else ''}intensity",
            "a third of the patches "
            "centred on a foreground voxel (nnU-Net's oversample_foreground_percent 0.33); "
            f"intensity augmentation; {flip_rule}",
            {"flip": flip},
            ("data.foreground_fraction", "data.augment"),
        )  # fmt: skip
    )
    total_iters = sched_tuple[0] * sched_tuple[1]
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
    decisions.append(Decision("optimizer", f"{optim['optimizer']} lr {optim['lr']:g} poly",
                              opt_rule, dict(optim), ("train.optimizer", "train.lr")))  # fmt: skip
    decisions.append(
        Decision(
            "schedule",
            f"{sched_tuple[0]} epochs × {sched_tuple[1]} iterations, validate every "
            f"{sched_tuple[2]}" + (f" on {val_max} cases" if val_max else ""),
            sched_rule,
            {
                "epochs": sched_tuple[0],
                "iterations_per_epoch": sched_tuple[1],
                "val_every": sched_tuple[2],
                "val_max_cases": val_max,
            },
            ("train.epochs", "train.iterations_per_epoch", "train.val_every"),
        )  # fmt: skip
    )

    # ---- the spec
    summaries = label_summary(fp, spacing)
    small_checks, add_lesion = plan_checks.small_structure_checks(summaries)
    spec = _spec(fp, options, plan_dims, slice_mode, spacing, all_same, topo, filters, cap, batch,
                 num_classes, contiguous, labels_map, values, sched_tuple, val_max,
                 add_lesion, optim, flip=flip)  # fmt: skip
    field_size = _receptive_field(spec)
    rf_checks = plan_checks.receptive_field_checks(
        field_size, spec["data"]["patch_size"], summaries
    )
    metrics = spec["evaluation"]["metrics"]
    decisions.append(
        Decision(
            "metrics",
            ", ".join(metrics),
            "overlap, distances and volumes"
            + (
                "; lesion-wise detection added for small structures (see the checks)"
                if add_lesion
                else ""
            ),
            {"metrics": metrics},
            ("evaluation.metrics",),
        )  # fmt: skip
    )
    tol = spec["evaluation"]["nsd_tolerance"]
    decisions.append(
        Decision(
            "nsd tolerance",
            f"{tol:g} mm",
            "one voxel along the coarsest axis, at least "
            "1 mm: a tolerance below the voxel size only counts exact boundary matches",
            {"nsd_tolerance": tol},
            ("evaluation.nsd_tolerance",),
        )  # fmt: skip
    )
    found.extend(rf_checks)
    found.extend(plan_checks.imbalance_checks(summaries))
    found.extend(small_checks)
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
    header = (
        f"planned by segcli plan from {fp.root} ({n_cases} cases, {len(fp.channels)} channel(s): "
        f"{', '.join(fp.channels)})",
        f"device {options.device}"
        + (f", budget {options.budget_minutes:g} min" if options.budget_minutes else ", no budget")
        + f", receptive field {fmt_shape(field_size)}",
    )
    return Plan(spec, tuple(decisions), tuple(found), schedule, tuple(candidates), header)


def _uniform(topo: rules.Topology) -> rules.Topology:
    """The plain U-Net nearest to ``topo``: every axis pooled ``min(pools)`` times, kernels 3."""
    depth = min(topo.pools_per_axis)
    dims = len(topo.patch)
    divisor = (2**depth,) * dims
    patch = tuple(int(math.ceil(p / d) * d) for p, d in zip(topo.patch, divisor, strict=True))
    return rules.Topology(
        ((2,) * dims,) * depth, ((3,) * dims,) * (depth + 1), (depth,) * dims, patch, divisor
    )


def _val_count(n: int) -> int:
    """Validation cases of ``segcli train``'s default split (val_fraction 0.2)."""
    if n < 2:
        return 0
    return min(max(int(round(0.2 * n)), 1), n - 1)


def _minutes_needed(m: Measurement, train_cases: int, val_cases: int) -> float:
    fixed = m.startup_seconds + m.load_case_seconds * (train_cases + val_cases)
    seconds = fixed + budget_rules.MIN_ITERATIONS * m.step_seconds + val_cases * m.val_case_seconds
    return seconds / budget_rules.SAFETY / 60.0


def _spec(
    fp: Fingerprint,
    options: PlanOptions,
    plan_dims: int,
    slice_mode: bool,
    spacing: tuple[float, ...],
    all_same: bool,
    topo: rules.Topology,
    filters: int,
    cap: int,
    batch: int,
    num_classes: int,
    contiguous: bool,
    labels_map: dict[int, str],
    values: tuple[int, ...],
    sched: tuple[int, int, int],
    val_max: int | None,
    add_lesion: bool,
    optim: dict[str, Any] | None = None,
    *,
    flip: bool,
) -> dict[str, Any]:
    """The spec mapping for one candidate (see :func:`make_plan`)."""
    model_dims = 3 if slice_mode else plan_dims
    patch = _embed(topo.patch, slice_mode, 1)
    strides = [_embed(s, slice_mode, 1) for s in topo.strides]
    kernels = [_embed(k, slice_mode, 1) for k in topo.kernel_sizes]
    # an axis one voxel thick (slices) has no spatial context: kernel 1 along it
    kernels = [[1 if p == 1 else k for k, p in zip(ks, patch, strict=True)] for ks in kernels]
    uniform = all(s == 2 for st in strides for s in st) and all(
        k == 3 for ks in kernels for k in ks
    )
    model: dict[str, Any] = {"arch": "unet", "dims": model_dims, "in_channels": len(fp.channels)}
    regions = _usable_regions(fp)
    if regions:
        model["classes"] = len(regions)
    elif contiguous:
        model["labels"] = dict(labels_map)
    else:
        model["classes"] = num_classes
    model.update({"filters": filters, "depth": topo.depth, "max_filters": cap})
    if not uniform:
        if not _schema_has_strides():  # an older U-Net: make_plan fell back to uniform pooling
            raise SpecError(
                "this dataset needs per-axis pooling strides and kernel sizes "
                f"(strides {strides}, kernels {kernels}) but this segcli's U-Net has no "
                "model.strides / model.kernel_sizes"
            )
        model["strides"] = strides
        model["kernel_sizes"] = kernels
    model.update({"convs_per_block": 2, "padding": "same", "upsample": "transpose",
                  "norm": "instance", "activation": "leaky_relu", "deep_supervision": True})  # fmt: skip
    epochs, per_epoch, val_every = sched
    train: dict[str, Any] = {"epochs": epochs, "iterations_per_epoch": per_epoch,
                             "batch_size": batch}  # fmt: skip
    train.update(optim or {"optimizer": "adamw", "lr": 0.003, "weight_decay": 1e-4})
    train.update({"schedule": "poly",
                  "workers": min(8, options.cpu_count) if _is_cuda(options.device) else 2,
                  "val_every": val_every})  # fmt: skip
    if val_max is not None:
        train["val_max_cases"] = val_max
    metrics = list(BASE_METRICS) + (list(plan_checks.LESION_METRICS) if add_lesion else [])
    evaluation: dict[str, Any] = {
        "metrics": metrics,
        "nsd_tolerance": round(max(1.0, max(spacing)), 3),
    }
    if not contiguous and not regions:
        evaluation["labels"] = list(values)
    return {
        "name": _name(options, fp),
        "seed": 0,
        **({"regions": {k: list(v) for k, v in regions.items()}} if regions else {}),
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
            "spacing": None if all_same else [round(s, 6) for s in spacing],
            "augment": {
                "flip": flip,
                "rotate90": False,
                "intensity": True,
                "probability": 0.5,
            },
        },
        "model": model,
        "loss": {"name": "dice_ce"},
        "train": train,
        "inference": {
            "overlap": 0.5,
            "blend": "gaussian",
            "batch_size": 4 if not _is_cuda(options.device) else 8,
            "tta": False,
            "pad_mode": "minimum",
        },  # fmt: skip
        "evaluation": evaluation,
        "output": "runs",
    }


def _usable_regions(fp: Fingerprint) -> dict[str, tuple[int, ...]]:
    """dataset.json's nnU-Net regions when segcli can train and decode them, else ``{}``."""
    if not fp.regions or region_problems(as_regions(fp.regions), list(fp.regions)):
        return {}
    return dict(fp.regions)


def _receptive_field(spec: dict[str, Any]) -> tuple[int, ...]:
    """Analytic receptive field of the planned U-Net at its patch size (voxels per axis)."""
    from segcli.config.schema import UNetSpec
    from segcli.models import field_graph
    from segcli.receptive_field import analyse

    model = UNetSpec.model_validate(spec["model"])
    report = analyse(field_graph(model), spec["data"]["patch_size"])
    return tuple(int(v) for v in report.receptive_field)
