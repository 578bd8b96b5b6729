"""Network, patch and schedule sizing: nnU-Net's memory rule, then the time budget.

    >>> fit = fit_to_memory(layout, num_classes=3, options=PlanOptions(root="data", device="cpu"))
    >>> sizing = size_for_budget(fit, layout, options, measure, spec_for, n_cases=208)
    >>> sizing.filters, sizing.topology.patch, sizing.schedule

Two steps, each pure apart from the ``measure`` callback:

* :func:`fit_to_memory` — nnU-Net's patch and batch for a memory target (its feature-map
  estimate against the reference of an 8 GB GPU, or ``--gpu-memory``), with segcli's CPU
  rounding to the *nearest* multiple of the pooling divisor;
* :func:`size_for_budget` — with ``--budget-minutes``: the widest of 32/16/8 filters that gets
  :data:`~segcli.plan.budget.ENOUGH_ITERATIONS` steps, then (narrowest network still short of
  :data:`~segcli.plan.budget.MIN_GOOD_PATCH_ITERATIONS`) a smaller patch; without a budget the
  default schedule.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from segcli.errors import SegcliError
from segcli.plan import budget as budget_rules
from segcli.plan import rules
from segcli.plan.budget import Measurement, Schedule
from segcli.plan.decision import Check, fmt_shape

__all__ = [
    "Candidate",
    "Layout",
    "MemoryFit",
    "Sizing",
    "fit_to_memory",
    "is_cuda",
    "size_for_budget",
    "val_count",
]

#: filters of the first stage tried under a budget, widest first (nnU-Net uses 32)
WIDTHS = (32, 16, 8)
#: the first stage's filters of nnU-Net's memory estimate (its 3d_fullres width)
ESTIMATE_FILTERS = 32
#: the schedule without --budget-minutes: a quarter of nnU-Net's 1000 × 250 on a GPU, and
#: 100 × 100 steps of the narrow CPU network on a CPU
DEFAULT_SCHEDULE_GPU = (250, 250)
DEFAULT_SCHEDULE_CPU = (100, 100)

#: ``measure(spec) -> Measurement``: time a candidate spec on the planning device
Measure = Callable[[dict[str, Any]], Measurement]
#: ``augment_costs(data_augment_mapping, patch, spacing) -> {transform: seconds per firing}``
#: on the planning machine (:func:`segcli.data.augment.cost.transform_costs`)
AugmentCosts = Callable[[dict[str, Any], list[int], tuple[float, ...]], dict[str, float]]
#: ``spec_for(filters, topology, batch, (epochs, iterations, val_every))``: a candidate's spec
SpecFor = Callable[[int, rules.Topology, int, tuple[int, int, int]], dict[str, Any]]


def is_cuda(device: str) -> bool:
    return device.startswith("cuda")


def val_count(n: int) -> int:
    """Validation cases of ``segcli train``'s default split (val_fraction 0.2)."""
    if n < 2:
        return 0
    return min(max(int(round(0.2 * n)), 1), n - 1)


@dataclass(frozen=True)
class Layout:
    """The grid the network is planned on.

    Attributes:
        dims: 2 or 3 (the network's spatial axes; 2 also for slices of 3D data).
        slice_mode: ``--dims 2`` on 3D data (each slice a sample).
        spacing: the target spacing of the data (all axes, mm).
        all_same: every case already has ``spacing`` (no resampling).
        median_shape: median cropped shape at ``spacing`` (all axes).
    """

    dims: int
    slice_mode: bool
    spacing: tuple[float, ...]
    all_same: bool
    median_shape: tuple[float, ...]

    @property
    def plan_spacing(self) -> tuple[float, ...]:
        """The spacing of the axes the network sees (the last two in slice mode)."""
        return self.spacing[1:] if self.slice_mode else self.spacing

    @property
    def plan_median(self) -> tuple[float, ...]:
        return self.median_shape[1:] if self.slice_mode else self.median_shape

    @property
    def cap(self) -> int:
        """nnU-Net's largest number of filters in a stage (320 in 3D, 512 in 2D)."""
        return 320 if self.dims == 3 else 512

    def embed(self, values: tuple[int, ...], fill: int) -> list[int]:
        """``values`` of the planned axes as a full spec list (``fill`` on the slice axis)."""
        return [fill, *values] if self.slice_mode else list(values)


@dataclass(frozen=True)
class MemoryFit:
    """nnU-Net's patch, pooling and batch for the memory target (see :func:`fit_to_memory`)."""

    topology: rules.Topology
    #: feature-map voxels per sample of the estimate at :data:`ESTIMATE_FILTERS`
    estimate: float
    #: times the patch was shrunk to fit the memory target
    shrinks: int
    #: the patch rounded up to the pooling divisor (nnU-Net), before the CPU's nearest rounding
    up_patch: tuple[int, ...]
    #: the patch was rounded to the nearest multiple instead of up (CPU)
    rounded_nearest: bool
    gpu_gb: float
    reference: float
    ref_batch: int
    #: nnU-Net's batch for the memory target, with its two ingredients
    mem_batch: int
    from_memory: int
    covered: int


def fit_to_memory(
    layout: Layout, num_classes: int, n_cases: int, device: str, gpu_memory_gb: float | None
) -> MemoryFit:
    """nnU-Net's network and patch for the memory target (an 8 GB GPU unless given)."""
    gpu_gb = gpu_memory_gb if gpu_memory_gb is not None else 8.0
    reference = rules.memory_reference(layout.dims, gpu_gb)
    ref_batch = rules.reference_batch(layout.dims)
    spacing, median = layout.plan_spacing, layout.plan_median
    topo, estimate, shrinks = rules.fit_patch_to_memory(
        spacing, median, ESTIMATE_FILTERS, layout.cap, num_classes, reference, ref_batch
    )
    # CPU: the nearest multiple of the divisor, not nnU-Net's next one (rules.nearest_patch)
    up_patch = topo.patch
    if not is_cuda(device) and shrinks == 0:
        topo = rules.nearest_patch(spacing, rules.initial_patch(spacing, median), topo)
    rounded_nearest = topo.patch != up_patch
    if rounded_nearest:
        estimate = rules.topology_feature_maps(topo, ESTIMATE_FILTERS, layout.cap, num_classes)
    dataset_voxels = float(np.prod(layout.median_shape)) * n_cases
    mem_batch, from_memory, covered = rules.batch_size_for_memory(
        estimate, reference, ref_batch, topo.patch, dataset_voxels
    )
    return MemoryFit(topo, estimate, shrinks, up_patch, rounded_nearest, gpu_gb, reference,
                     ref_batch, mem_batch, from_memory, covered)  # fmt: skip


def planned_batch(fit: MemoryFit, dims: int, device: str) -> int:
    """nnU-Net's memory batch on a GPU; on a CPU time, not memory, limits it."""
    if is_cuda(device):
        return fit.mem_batch
    # CPU: nnU-Net's minimum batch in 3D, its 2D reference
    return rules.MIN_BATCH if dims == 3 else min(fit.mem_batch, rules.REFERENCE_BATCH_2D)


@dataclass(frozen=True)
class Candidate:
    """One network/patch/batch the budget search considered, with its measurement."""

    filters: int
    patch: tuple[int, ...]
    batch: int
    measurement: Measurement | None
    schedule: Schedule | None


@dataclass(frozen=True)
class Sizing:
    """Width, patch and schedule, with the reasons (see :func:`size_for_budget`)."""

    filters: int
    topology: rules.Topology
    #: ``(epochs, iterations_per_epoch, val_every)``
    schedule_tuple: tuple[int, int, int]
    val_max: int | None
    width_rule: str
    schedule_rule: str
    schedule: Schedule | None = None
    candidates: tuple[Candidate, ...] = ()
    checks: tuple[Check, ...] = ()


def default_sizing(topology: rules.Topology, device: str) -> Sizing:
    """Without ``--budget-minutes``: nnU-Net's width on a GPU, the narrow CPU network else."""
    cuda = is_cuda(device)
    filters = 32 if cuda else 8
    epochs, per_epoch = DEFAULT_SCHEDULE_GPU if cuda else DEFAULT_SCHEDULE_CPU
    val_every = max(1, math.ceil(epochs / budget_rules.VALIDATIONS))
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
    return Sizing(filters, topology, (epochs, per_epoch, val_every), None, width_rule, sched_rule)


def size_for_budget(
    topology: rules.Topology,
    layout: Layout,
    batch: int,
    budget_minutes: float,
    device: str,
    n_cases: int,
    measure: Measure,
    spec_for: SpecFor,
) -> Sizing:
    """The widest network (then the largest patch) whose schedule fits ``budget_minutes``.

    Raises:
        SegcliError: even the narrowest network with the smallest patch gets fewer than
            :data:`~segcli.plan.budget.MIN_ITERATIONS` steps.
    """
    budget_s = budget_minutes * 60.0
    train_cases, val_cases = n_cases - val_count(n_cases), val_count(n_cases)

    def candidate(width: int, t: rules.Topology) -> Candidate:
        m = measure(spec_for(width, t, batch, (1, 1, 1)))
        s = budget_rules.size_schedule(m, budget_s, train_cases, val_cases)
        return Candidate(width, t.patch, batch, m, s)

    candidates, chosen = _widest(candidate, topology)
    narrow = candidates[-1]
    assert narrow.schedule is not None
    if chosen is None and narrow.schedule.iterations >= budget_rules.MIN_GOOD_PATCH_ITERATIONS:
        chosen = narrow  # short of ENOUGH_ITERATIONS, but a smaller patch would cost more
    if chosen is None:
        smaller = _shrunk_patch(narrow, topology, layout, budget_s, train_cases, val_cases)
        if smaller.patch != topology.patch:
            candidates.append(candidate(WIDTHS[-1], smaller))
            topology = smaller
        chosen = candidates[-1]
    assert chosen.schedule is not None and chosen.measurement is not None
    if chosen.schedule.iterations < budget_rules.MIN_ITERATIONS:
        need = _minutes_needed(chosen.measurement, train_cases, val_cases)
        raise SegcliError(
            f"--budget-minutes {budget_minutes:g}: too small to train at all; even "
            f"the smallest network ({chosen.filters} filters, patch {fmt_shape(chosen.patch)}, "
            f"batch {chosen.batch}) gets only {chosen.schedule.iterations} of the "
            f"{budget_rules.MIN_ITERATIONS} iterations a U-Net needs to learn anything on "
            f"{device} ({chosen.measurement.step_seconds:.2f} s per step, "
            f"{chosen.schedule.fixed_seconds:.0f} s to load the data); give at least "
            f"{need:.1f} minutes"
        )
    schedule = chosen.schedule
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
        f"Measured on {device}: {tried}"
    )
    m = chosen.measurement
    sched_rule = (
        f"{budget_minutes:g} min × {budget_rules.SAFETY:.0%} = "
        f"{budget_s * budget_rules.SAFETY:.0f} s: {schedule.fixed_seconds:.0f} s start-up and "
        f"loading ({m.load_case_seconds:.3f} s/case), {schedule.validations} validations × "
        f"{val_max or val_cases} cases × {m.val_case_seconds:.2f} s = "
        f"{schedule.validation_seconds:.0f} s, {m.epoch_seconds:.2f} s of checkpoints and "
        "curves per epoch, the rest training at "
        f"{m.step_seconds:.3f} s/step → {schedule.iterations:,} steps = "
        f"{schedule.epochs} epochs × {schedule.iterations_per_epoch}; predicted wall clock "
        f"{schedule.predicted_seconds / 60:.1f} min"
    )
    checks: tuple[Check, ...] = ()
    if schedule.iterations < budget_rules.ENOUGH_ITERATIONS:
        checks = (
            Check(
                "compromise: budget",
                "warning",
                f"only {schedule.iterations:,} training steps fit the budget (fewer than "
                f"{budget_rules.ENOUGH_ITERATIONS:,}); expect a lower Dice than a longer run",
                {"iterations": schedule.iterations},
            ),
        )
    sched_tuple = (schedule.epochs, schedule.iterations_per_epoch, schedule.val_every)
    return Sizing(chosen.filters, topology, sched_tuple, val_max, width_rule, sched_rule,
                  schedule, tuple(candidates), checks)  # fmt: skip


def _widest(
    candidate: Callable[[int, rules.Topology], Candidate], topology: rules.Topology
) -> tuple[list[Candidate], Candidate | None]:
    """The candidates timed (the wider ones first, the narrowest last) and the widest with
    enough steps; None when even the narrowest network is short of steps (timed first: then
    no wider one needs timing)."""
    narrow = candidate(WIDTHS[-1], topology)
    assert narrow.schedule is not None
    if narrow.schedule.iterations < budget_rules.ENOUGH_ITERATIONS:
        return [narrow], None
    tried: list[Candidate] = []
    for width in WIDTHS[:-1]:  # widest first
        wide = candidate(width, topology)
        tried.append(wide)
        assert wide.schedule is not None
        if wide.schedule.iterations >= budget_rules.ENOUGH_ITERATIONS:
            return [*tried, narrow], wide
    return [*tried, narrow], narrow


def _shrunk_patch(
    narrow: Candidate,
    topology: rules.Topology,
    layout: Layout,
    budget_s: float,
    train_cases: int,
    val_cases: int,
) -> rules.Topology:
    """nnU-Net's patch shrinking, down to half the median shape, until the narrowest network
    is predicted to get ≥ MIN_GOOD_PATCH_ITERATIONS steps: the step time scales with the patch
    voxels; start-up, loading, validation and every epoch's bookkeeping stay as measured."""
    m = narrow.measurement
    assert m is not None
    t = topology
    floor = [max(1.0, m_ / 2) for m_ in layout.plan_median]
    while True:
        smaller = rules.shrink_patch(t.patch, layout.plan_median, layout.plan_spacing)
        if smaller is None or any(p < f for p, f in zip(smaller, floor, strict=True)):
            return t
        t = rules.topology(layout.plan_spacing, smaller)
        ratio = float(np.prod(t.patch)) / float(np.prod(topology.patch))
        guess = replace(m, step_seconds=m.step_seconds * ratio)
        steps = budget_rules.size_schedule(guess, budget_s, train_cases, val_cases).iterations
        if steps >= budget_rules.MIN_GOOD_PATCH_ITERATIONS:
            return t


def _minutes_needed(m: Measurement, train_cases: int, val_cases: int) -> float:
    fixed = m.startup_seconds + m.load_case_seconds * (train_cases + val_cases)
    seconds = fixed + budget_rules.MIN_ITERATIONS * m.step_seconds + val_cases * m.val_case_seconds
    return seconds / budget_rules.SAFETY / 60.0
