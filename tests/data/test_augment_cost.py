"""The planner's side of augmentation: measured costs, cheap first, a set within an allowance."""

from __future__ import annotations

import pytest
import torch

from segcli.config.schema import AugmentSpec
from segcli.data.augment.cost import (
    CHEAP_FIRST,
    TRANSFORMS,
    cheap_first,
    expected_cost,
    fit_to_allowance,
    per_patch_allowance,
    transform_costs,
)

PRESET = AugmentSpec(preset="nnunet", elastic={"probability": 0.1})
#: made-up seconds per firing (the planner passes measured ones)
COSTS = {
    "rotation": 0.030,
    "scaling": 0.028,
    "elastic": 0.050,
    "noise": 0.002,
    "blur": 0.003,
    "brightness": 0.0001,
    "contrast": 0.0002,
    "low_resolution": 0.002,
    "inverted_gamma": 0.001,
    "gamma": 0.001,
    "flip": 0.0001,
}


def test_costs_are_measured_for_every_enabled_transform_on_one_thread() -> None:
    threads = torch.get_num_threads()
    costs = transform_costs(PRESET, (12, 16, 12), spacing=(1.0, 1.0, 1.0), repeats=2)
    assert list(costs) == [*TRANSFORMS, "flip"]
    assert all(0 < seconds < 5 for seconds in costs.values())
    assert costs["rotation"] > costs["flip"]  # a resampling against a strided view
    assert torch.get_num_threads() == threads  # restored
    simple = transform_costs(AugmentSpec(rotate90=True, intensity=True), (8, 8), repeats=1)
    assert list(simple) == ["flip", "rotate90", "intensity"]


def test_expected_cost_weighs_each_transform_by_its_probability() -> None:
    spec = AugmentSpec(flip=True, probability=0.5, noise={"probability": 0.1})
    assert expected_cost(spec, COSTS) == pytest.approx(0.5 * 0.0001 + 0.1 * 0.002)


def test_cheap_first_orders_by_expected_cost() -> None:
    order = cheap_first(PRESET, COSTS)
    expected = [p * COSTS[n] for n, p in ((n, _probability(n)) for n in order)]
    assert expected == sorted(expected)
    assert order[-3:] == ["elastic", "scaling", "rotation"]
    assert set(CHEAP_FIRST) == set(COSTS)  # the documented order names every transform


def _probability(name: str) -> float:
    return PRESET.probability if name == "flip" else getattr(PRESET, name).probability


def test_fit_to_allowance_keeps_the_cheapest_and_loads_back() -> None:
    from segcli.config.loader import dump, from_dict

    total = expected_cost(PRESET, COSTS)
    same, dropped = fit_to_allowance(PRESET, COSTS, total + 1e-9)
    assert same == PRESET and dropped == []
    none, dropped = fit_to_allowance(PRESET, COSTS, 0.0)
    assert dropped == cheap_first(PRESET, COSTS) and expected_cost(none, COSTS) == 0
    assert not none.flip and none.rotation is None
    # room for everything but the resampling: the three spatial transforms go, dearest last
    spatial = sum(_probability(n) * COSTS[n] for n in ("rotation", "scaling", "elastic"))
    reduced, dropped = fit_to_allowance(PRESET, COSTS, total - spatial + 1e-9)
    assert dropped == ["elastic", "scaling", "rotation"]
    assert reduced.rotation is None and reduced.noise == PRESET.noise and reduced.flip
    assert expected_cost(reduced, COSTS) <= total - spatial + 1e-9
    raw = {"data": {"synthetic": {}, "augment": reduced.model_dump(mode="json")}}
    assert from_dict({**raw, "model": {"arch": "cnn"}}).data.augment == reduced
    assert "preset: nnunet" in dump(from_dict({**raw, "model": {"arch": "cnn"}}))


def test_per_patch_allowance() -> None:
    # 2 workers, a 0.3 s step, batches of 2: each worker has 0.3 s per patch, minus the read
    assert per_patch_allowance(0.3, 2, 2, base_seconds=0.01) == pytest.approx(0.29)
    assert per_patch_allowance(0.3, 2, 0) == 0.0
    assert per_patch_allowance(0.01, 16, 2, base_seconds=0.01) == 0.0
