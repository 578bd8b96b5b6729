"""make_plan as a pure function of a fingerprint and (mocked) measurements."""

from __future__ import annotations

import math

import pytest

from segcli.config import from_dict, load
from segcli.errors import SegcliError
from segcli.plan.budget import Measurement
from segcli.plan.fingerprint import CaseFingerprint, ChannelIntensity, Fingerprint, LabelCase
from segcli.plan.planner import PlanOptions, make_plan

from ..conftest import EXPERIMENTS


def hippocampus_like(cases: int = 208) -> Fingerprint:
    """208 cases of 36×50×35 at 1 mm with two ~2,000-voxel labels (the shared Task04 data)."""
    label = LabelCase(2000, 1, (20, 25, 25), (20.0, 25.0, 25.0), 2000, 2000.0)
    records = tuple(
        CaseFingerprint(
            f"hippocampus_{i:03d}",
            (1.0, 1.0, 1.0),
            (36, 50, 35),
            (36, 50, 35),
            {1: label, 2: label},
        )  # fmt: skip
        for i in range(cases)
    )
    mri = ChannelIntensity("MRI", 100.0, 20.0, 100.0, 10.0, 200.0, 40.0, 180.0, False, 0.0, 1000)
    return Fingerprint("data/hippo", ("MRI",), {0: "background", 1: "Anterior", 2: "Posterior"},
                       records, (mri,), labels_declared=True)  # fmt: skip


def quiet_two_cores(spec: dict) -> Measurement:
    # docs/results.md: the 8-filter network ran 2,400 steps in 8.5 minutes on 2 quiet cores
    return Measurement(0.19 * (spec["model"]["filters"] / 8) ** 1.5, 0.15, 0.03, 6.0)


def test_quiet_cpu_budget_reproduces_the_hand_tuned_spec() -> None:
    options = PlanOptions(root="data/hippo", budget_minutes=10, device="cpu")
    plan = make_plan(hippocampus_like(), options, quiet_two_cores)
    exp = from_dict(plan.spec)
    hand = load(EXPERIMENTS / "hippocampus.yaml")
    # a CPU rounds the median shape 36×50×35 to the nearest multiple of 8, not up to 40×56×40
    assert exp.data.patch_size == hand.data.patch_size == [32, 48, 32]
    patch = next(d for d in plan.decisions if d.name == "patch size")
    assert "nearest multiple" in patch.rule and "40×56×40" in patch.rule
    assert (exp.model.filters, exp.model.depth) == (hand.model.filters, hand.model.depth)
    assert exp.model.deep_supervision and exp.loss.name == hand.loss.name
    assert exp.train.batch_size == hand.train.batch_size
    assert (exp.train.optimizer, exp.train.lr) == (hand.train.optimizer, hand.train.lr)
    # the labels are Anterior and Posterior: no flips, as in the hand spec, and the plan says
    # why; 2,400 steps of batch 2 over 166 cases is 29 patches per case: the light set
    assert exp.data.augment == hand.data.augment
    augmentation = next(d for d in plan.decisions if d.name == "augmentation")
    assert "'Anterior', 'Posterior'" in augmentation.rule
    assert augmentation.numbers["passes_per_case"] == pytest.approx(2 * 2400 / 166, rel=0.05)
    # 0.19 s per step fills the budget with 2,400 steps: 30 epochs of ~80, validation every 4
    assert (exp.train.epochs, exp.train.val_every) == (30, 4)
    assert abs(exp.train.iterations_per_epoch - 80) <= 5
    assert plan.schedule is not None and plan.schedule.predicted_seconds <= 600


def test_a_fast_device_gets_the_nnunet_width() -> None:
    options = PlanOptions(root="data/hippo", budget_minutes=60, device="cuda")
    plan = make_plan(hippocampus_like(), options, lambda spec: Measurement(0.05, 0.05, 0.01, 8))
    assert plan.spec["model"]["filters"] == 32
    # the GPU branch takes nnU-Net's optimiser: SGD, lr 0.01, Nesterov momentum 0.99
    train = plan.spec["train"]
    assert (train["optimizer"], train["lr"]) == ("sgd", 0.01)
    assert train.get("momentum", 0.99) == 0.99 and train.get("nesterov", True)
    assert plan.spec["data"]["patch_size"] == [40, 56, 40]  # a GPU rounds up, as nnU-Net
    # nnU-Net's batch rule: 5 % of 208 × 36·50·35 voxels / 40·56·40 = 7
    assert plan.spec["train"]["batch_size"] == 7


def test_a_slow_machine_narrows_then_shrinks_the_patch() -> None:
    options = PlanOptions(root="data/hippo", budget_minutes=10, device="cpu")

    def slow(spec: dict) -> Measurement:
        voxels = 1
        for p in spec["data"]["patch_size"]:
            voxels *= p
        return Measurement(1.5 * voxels / 89_600, 0.3, 0.03, 6.0)

    plan = make_plan(hippocampus_like(), options, slow)
    assert plan.spec["model"]["filters"] == 8
    assert plan.spec["data"]["patch_size"] != [40, 56, 40]
    assert any(c.name == "compromise: budget" for c in plan.checks)
    assert "shrunk" in next(d.rule for d in plan.decisions if d.name == "patch size")


def _voxel_timed(seconds_per_89600: float, epoch_seconds: float):
    """Step time ∝ patch voxels (1.5 s for the 40×56×40 patch at scale 1.5), realistic
    validation, loading and per-epoch bookkeeping (checkpoints and curves) on 2 cores."""

    def measure(spec: dict) -> Measurement:
        voxels = 1
        for p in spec["data"]["patch_size"]:
            voxels *= p
        return Measurement(seconds_per_89600 * voxels / 89_600, 0.3, 0.03, 6.0, epoch_seconds)

    return measure


def test_no_shrink_when_the_narrow_network_has_enough_steps_for_its_patch() -> None:
    # the 8-filter network gets 1,000-2,000 steps: short of ENOUGH_ITERATIONS (a warning), but
    # a smaller patch would cost more than the missing steps: the patch stays, one timing
    from segcli.plan.budget import ENOUGH_ITERATIONS, MIN_GOOD_PATCH_ITERATIONS

    options = PlanOptions(root="data/hippo", budget_minutes=10, device="cpu")
    plan = make_plan(hippocampus_like(), options, _voxel_timed(0.55, 1.0))
    (only,) = plan.candidates
    assert only.filters == 8 and only.schedule is not None
    assert MIN_GOOD_PATCH_ITERATIONS <= only.schedule.iterations < ENOUGH_ITERATIONS
    assert plan.spec["data"]["patch_size"] == list(only.patch) == [32, 48, 32]
    assert "then shrunk" not in next(d.rule for d in plan.decisions if d.name == "patch size")
    assert any(c.name == "compromise: budget" for c in plan.checks)


@pytest.mark.parametrize("epoch_seconds", [0.0, 2.0, 4.0])
def test_the_shrunk_patch_gets_the_steps_the_rule_promises(epoch_seconds: float) -> None:
    # the step count predicted for a smaller patch keeps the measured per-epoch time: the
    # patch it settles on, measured, does get MIN_GOOD_PATCH_ITERATIONS steps (leaving the
    # epoch time out stopped shrinking too early: 930 steps at 2 s per epoch)
    from segcli.plan.budget import MIN_GOOD_PATCH_ITERATIONS, SAFETY

    options = PlanOptions(root="data/hippo", budget_minutes=10, device="cpu")
    plan = make_plan(hippocampus_like(), options, _voxel_timed(1.5, epoch_seconds))
    first, chosen = plan.candidates
    assert chosen.patch != first.patch and chosen.schedule is not None
    assert chosen.schedule.iterations >= MIN_GOOD_PATCH_ITERATIONS
    assert plan.schedule is chosen.schedule
    assert plan.schedule.predicted_seconds <= 10 * 60 * SAFETY


def test_less_gpu_memory_shrinks_the_patch_then_the_batch() -> None:
    # CT-like: 100 cases of 160×256×256 at 1 mm; nnU-Net's rule shrinks the patch until the
    # feature-map estimate fits the memory target, then sizes the batch by the headroom
    label = LabelCase(50_000, 1, (80, 128, 128), (80.0, 128.0, 128.0), 50_000, 50_000.0)
    records = tuple(
        CaseFingerprint(
            f"ct_{i:03d}", (1.0, 1.0, 1.0), (160, 256, 256), (160, 256, 256), {1: label}
        )  # fmt: skip
        for i in range(100)
    )
    ct = ChannelIntensity("CT", 40.0, 100.0, 40.0, -900.0, 300.0, -1000.0, 1200.0, True,
                          -1024.0, 1000)  # fmt: skip
    fp = Fingerprint("data/ct", ("CT",), {0: "background", 1: "organ"}, records, (ct,),
                     labels_declared=True)  # fmt: skip

    def planned(gb: float) -> tuple[dict, dict]:
        plan = make_plan(fp, PlanOptions(root="data/ct", device="cuda", gpu_memory_gb=gb))
        patch = next(d for d in plan.decisions if d.name == "patch size")
        return plan.spec, patch.numbers | {"rule": patch.rule}

    big_spec, big = planned(40.0)
    spec8, at8 = planned(8.0)
    spec2, at2 = planned(2.0)
    voxels = [math.prod(s["data"]["patch_size"]) for s in (big_spec, spec8, spec2)]
    assert voxels[0] > voxels[1] > voxels[2]
    assert 0 < at8["shrink_steps"] < at2["shrink_steps"]
    assert "to fit 2 GB" in at2["rule"] and "to fit 8 GB" in at8["rule"]
    for numbers in (big, at8, at2):  # every estimate fits its own memory target
        assert numbers["feature_map_voxels"] <= numbers["reference"]
    assert spec2["train"]["batch_size"] >= 2


def _costs(rotation_ms: float):
    """Augmentation costs per firing (s): the spatial transform ``rotation_ms``, the others
    cheap — the shape bench/augment_cost.py measures (docs/benchmarks.md); elastic (never
    firing in nnU-Net's preset) costs nothing expected."""

    def costs(augment: dict, patch: list[int], spacing: tuple[float, ...]) -> dict[str, float]:
        from segcli.config.schema import AugmentSpec
        from segcli.data.augment.cost import enabled

        assert len(patch) == len(spacing) == 3
        spatial = {"rotation": rotation_ms, "scaling": rotation_ms, "elastic": 2 * rotation_ms}
        return {n: spatial.get(n, 0.2) / 1e3 for n in enabled(AugmentSpec.model_validate(augment))}

    return costs


def test_a_small_dataset_gets_nnunets_augmentation_and_a_large_one_the_light_set() -> None:
    options = PlanOptions(root="data/hippo", budget_minutes=10, device="cpu")
    small = make_plan(hippocampus_like(20), options, quiet_two_cores)
    large = make_plan(hippocampus_like(), options, quiet_two_cores)
    small_aug = from_dict(small.spec).data.augment
    assert small_aug.preset == "nnunet" and small_aug.rotation is not None
    assert small_aug.noise is not None and small_aug.gamma is not None
    assert small_aug.flip is False and not small_aug.intensity  # sided labels: no mirroring
    assert from_dict(large.spec).data.augment.preset is None
    row = next(d for d in small.decisions if d.name == "augmentation")
    assert row.value == "nnU-Net's without flip" and "patches per training case" in row.rule


def test_the_budget_cuts_the_dearest_transforms_the_loader_cannot_afford() -> None:
    options = PlanOptions(root="data/hippo", budget_minutes=10, device="cpu")
    fp = hippocampus_like(20)
    cheap = make_plan(fp, options, quiet_two_cores, _costs(0.5))
    dear = make_plan(fp, options, quiet_two_cores, _costs(100.0))
    assert from_dict(cheap.spec).data.augment.rotation is not None
    kept = next(d for d in cheap.decisions if d.name == "augmentation")
    assert kept.numbers["dropped"] == [] and "all kept" in kept.rule
    aug = from_dict(dear.spec).data.augment
    assert aug.rotation is None and aug.scaling is None
    assert aug.noise is not None and aug.gamma is not None  # the cheap ones stay
    row = next(d for d in dear.decisions if d.name == "augmentation")
    assert set(row.numbers["dropped"]) == {"rotation", "scaling"}
    assert row.numbers["ms_per_patch"] > row.numbers["allowance_ms"]
    assert "the dearest left out (" in row.rule


def test_hopeless_budget_is_refused() -> None:
    options = PlanOptions(root="data/hippo", budget_minutes=0.5, device="cpu")
    with pytest.raises(SegcliError, match="too small to train"):
        make_plan(hippocampus_like(), options, lambda spec: Measurement(2.0, 1.0, 0.1, 10.0))


def test_every_decision_has_a_rule_and_sets_known_keys() -> None:
    from segcli.config import from_dict

    plan = make_plan(hippocampus_like(), PlanOptions(root="data/hippo"))
    from_dict(plan.spec)  # every key the plan writes is a key of the schema
    for d in plan.decisions:
        assert d.rule and d.value
        present = [key for key in d.keys if _has(plan.spec, key)]
        # the YAML comment goes above the first key present: a decision that sets keys has one
        assert present or not d.keys, d.name
        # keys a plan may leave out, by design (uniform pooling, all validation cases)
        optional = {"model.strides", "model.kernel_sizes", "train.val_max_cases"}
        assert set(d.keys) - set(present) <= optional, (d.name, d.keys)
    assert {d.name for d in plan.decisions} >= {"target spacing", "patch size", "pooling",
                                                 "kernels", "filters", "batch size",
                                                 "normalization", "schedule"}  # fmt: skip


def _has(spec: dict, dotted: str) -> bool:
    node: object = spec
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True
