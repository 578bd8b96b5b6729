"""segcli.precision: resolving ``auto``, reduced-precision training and inference on CPU."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from segcli.config import dump, from_dict
from segcli.errors import SpecError
from segcli.inference import sliding_window
from segcli.precision import (
    PRECISIONS,
    bf16_native,
    cpu_bf16_supported,
    float32_output,
    memory_format,
    resolve_precision,
)


def _yes(*_: object) -> bool:
    return True


def _no(*_: object) -> bool:
    return False


# --------------------------------------------------------------------------- auto


@pytest.mark.parametrize(
    ("device", "cpu_bf16", "cuda_bf16", "expected"),
    [
        ("cpu", True, False, "bf16"),
        ("cpu", False, True, "fp32"),
        ("cuda", False, True, "bf16"),
        ("cuda:1", True, False, "fp16"),
        ("mps", True, True, "fp32"),
    ],
)
def test_auto_resolves_per_device_and_capability(
    device: str, cpu_bf16: bool, cuda_bf16: bool, expected: str
) -> None:
    choice = resolve_precision(
        "auto",
        device,
        cpu_bf16=_yes if cpu_bf16 else _no,
        cuda_bf16=_yes if cuda_bf16 else _no,
    )
    assert choice.name == expected
    assert choice.requested == "auto"
    assert choice.device_type == device.split(":")[0]
    assert choice.reason.startswith("auto: ")
    assert choice.describe() == f"{expected} ({choice.reason})"
    # a gradient scaler exactly where fp16 runs (CUDA without bf16)
    assert choice.needs_grad_scaler == (expected == "fp16")
    if choice.device_type == "cpu":
        assert not choice.grad_scaler().is_enabled()


def test_auto_only_asks_the_probe_of_its_own_device() -> None:
    asked: list[str] = []

    def cpu() -> bool:
        asked.append("cpu")
        return True

    def cuda(_: torch.device) -> bool:
        asked.append("cuda")
        return False

    resolve_precision("auto", "cpu", cpu_bf16=cpu, cuda_bf16=cuda)
    resolve_precision("auto", torch.device("cuda", 0), cpu_bf16=cpu, cuda_bf16=cuda)
    assert asked == ["cpu", "cuda"]


@pytest.mark.parametrize("name", ["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("has_bf16", [True, False])
def test_an_explicit_precision_is_taken_as_given(name: str, has_bf16: bool) -> None:
    probe = _yes if has_bf16 else _no
    choice = resolve_precision(name, "cpu", cpu_bf16=probe, cuda_bf16=probe)
    assert choice.name == name and choice.requested == name
    assert (
        choice.dtype == {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]
    )
    emulated = name == "bf16" and not has_bf16
    assert ("emulated" in choice.reason) == emulated
    assert choice.grad_scaler().is_enabled() == (name == "fp16")  # CPU fp16 scales too


def test_an_unknown_precision_is_an_error_naming_the_choices() -> None:
    with pytest.raises(ValueError, match="auto, fp32, bf16, fp16.*'fp8'"):
        resolve_precision("fp8", "cpu")
    assert PRECISIONS == ("auto", "fp32", "bf16", "fp16")


#: /proc/cpuinfo flags of real processors (abridged to the vector extensions) and whether
#: they compute bfloat16 natively, from the vendors' instruction-set documentation
_PROCESSORS = {
    # Intel Sapphire Rapids (Xeon 8480+): AMX and AVX512-BF16
    "sapphire rapids": ("avx2 avx512f avx512bw avx512_vnni avx512_bf16 amx_bf16 amx_tile", True),
    # Intel Ice Lake (Xeon 8375C): AVX-512 without BF16 — oneDNN emulates bf16 there (slower)
    "ice lake": ("avx2 avx512f avx512bw avx512vl avx512_vnni avx512_vbmi2", False),
    # AMD Zen 4 (EPYC 9004): AVX512-BF16
    "zen 4": ("avx2 avx512f avx512bw avx512_vnni avx512_bf16", True),
    # AMD Zen 3 (EPYC 7003): no AVX-512 at all
    "zen 3": ("avx2 fma f16c", False),
    # AWS Graviton3 (Neoverse V1, ARMv8.4 + BF16): the ARM feature 'bf16'
    "graviton3": ("fp asimd sve sve2 i8mm bf16 svebf16", True),
    # AWS Graviton2 (Neoverse N1): no bf16
    "graviton2": ("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics", False),
}


@pytest.mark.parametrize("name", sorted(_PROCESSORS))
def test_bf16_is_native_only_on_processors_with_bf16_instructions(name: str) -> None:
    flags, native = _PROCESSORS[name]
    assert bf16_native(True, False, flags.split()) is native
    # oneDNN without bf16 (or no oneDNN) never runs it, whatever the flags say
    assert bf16_native(False, False, flags.split()) is False
    # torch's own probe (AVX512-BF16 / AMX) is enough on its own
    assert bf16_native(True, True, []) is True


def test_the_cpu_probe_agrees_with_torchs_own_probes() -> None:
    # on x86 torch answers for AVX512-BF16 and AMX itself: the flag list is only a fallback
    probes = [getattr(torch.cpu, n, None) for n in ("_is_avx512_bf16_supported",
                                                   "_is_amx_tile_supported")]  # fmt: skip
    if platform.machine() not in ("x86_64", "AMD64") or None in probes:
        pytest.skip("torch's bf16 probes are x86 only")
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        assert cpu_bf16_supported() is False
    else:
        assert cpu_bf16_supported() == any(probe() for probe in probes)


# --------------------------------------------------------------------------- autocast, dtypes


def test_autocast_runs_convolutions_in_the_chosen_dtype_only() -> None:
    conv = nn.Conv2d(1, 2, 3, padding=1)
    x = torch.randn(2, 1, 8, 8)
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        choice = resolve_precision(name, "cpu")
        with choice.autocast():
            out = conv(x)
        assert out.dtype == dtype
        assert conv.weight.dtype == torch.float32  # the weights themselves stay float32
        assert float32_output(out).dtype == torch.float32
        assert all(o.dtype == torch.float32 for o in float32_output([out, out[:, :, ::2]]))


@pytest.mark.parametrize(
    ("dims", "device", "expected"),
    [
        (2, "cpu", torch.contiguous_format),
        (3, "cpu", torch.channels_last_3d),
        (1, "cpu", torch.contiguous_format),
        (3, "cuda", torch.contiguous_format),
    ],
)
def test_memory_format_rule(dims: int, device: str, expected: torch.memory_format) -> None:
    assert memory_format(dims, device) == expected


def _smooth_image(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, 1, *(max(s // 4, 1) for s in shape), generator=g)
    mode = "bilinear" if len(shape) == 2 else "trilinear"
    return nn.functional.interpolate(coarse, size=shape, mode=mode)[0]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_sliding_window_keeps_probabilities_and_accumulator_float32(precision: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv3d(1, 6, 3, padding=1), nn.ReLU(), nn.Conv3d(6, 3, 3, padding=1)
    ).eval()
    image = _smooth_image((20, 24, 18))
    reference = sliding_window(model, image, (12, 12, 12), precision="fp32")
    probs = sliding_window(model, image, (12, 12, 12), precision=precision)
    assert probs.dtype == torch.float32 and reference.dtype == torch.float32
    # softmax and blending in float32: the classes sum to 1 far below bf16's 2^-8 resolution
    assert torch.allclose(probs.sum(0), torch.ones(20, 24, 18), atol=1e-5)
    # the reduced-precision network is close to the float32 one and agrees on the argmax
    assert (probs - reference).abs().max() < 0.05
    agreement = (probs.argmax(0) == reference.argmax(0)).float().mean()
    assert agreement >= 0.99
    assert (probs - reference).abs().max() > 0  # the network really ran in another dtype


# --------------------------------------------------------------------------- spec


def _toy(precision: str | None = None, **train: Any) -> dict[str, Any]:
    """A 2D bright-square toy every precision learns within 30 iterations."""
    synthetic = {"dims": 2, "cases": 24, "size": 24, "lesion": 5, "ring_distance": 2}
    train_section: dict[str, Any] = {
        "epochs": 3,
        "iterations_per_epoch": 10,
        "batch_size": 8,
        "workers": 0,
        "lr": 3e-3,
        **train,
    }
    if precision is not None:
        train_section["precision"] = precision
    return {
        "name": "toy",
        "seed": 0,
        "data": {
            "synthetic": {**synthetic, "malign_fraction": 1.0},
            "patch_size": [24, 24],
            "val_fraction": 0.25,
        },
        "model": {"arch": "unet", "dims": 2, "filters": 4, "depth": 2},
        "train": train_section,
        "inference": {"batch_size": 16, "precision": "fp32"},
    }


def test_precision_keys_default_to_auto_and_reject_other_values() -> None:
    raw = _toy()
    del raw["inference"]["precision"]  # _toy sets fp32: the default is what is left out
    exp = from_dict(raw)
    assert exp.train.precision == "auto" and exp.inference.precision == "auto"
    assert exp.train.legacy_note is None
    with pytest.raises(SpecError, match="train.precision"):
        from_dict(_toy("fp8"))


@pytest.mark.parametrize(
    ("old", "expected"),
    [
        ({"amp": False}, "fp32"),
        ({"amp": False, "amp_dtype": "fp16"}, "fp32"),
        ({"amp": True}, "auto"),
        ({"amp": True, "amp_dtype": "fp16"}, "fp16"),
        ({"amp_dtype": "bf16"}, "bf16"),
    ],
)
def test_old_amp_keys_load_as_precision_with_a_message(old: dict[str, Any], expected: str) -> None:
    exp = from_dict(_toy(**old))
    assert exp.train.precision == expected
    note = exp.train.legacy_note
    assert note is not None and f"train.precision: {expected}" in note
    for key, value in old.items():
        assert f"train.{key}: {str(value).lower()}" in note
    # the resolved spec (config.yaml) spells the new key only, and loads back the same
    text = dump(exp)
    assert "amp_dtype" not in text and "amp:" not in text
    again = from_dict(__import__("yaml").safe_load(text))
    assert again.train.precision == expected and again.train.legacy_note is None


def test_an_explicit_precision_wins_over_old_amp_keys() -> None:
    exp = from_dict(_toy("bf16", amp=False))
    assert exp.train.precision == "bf16"
    assert "ignored" in (exp.train.legacy_note or "")


# --------------------------------------------------------------------------- training


def _dice(pred: np.ndarray, ref: np.ndarray) -> float:
    inter = np.logical_and(pred == 1, ref == 1).sum()
    total = (pred == 1).sum() + (ref == 1).sum()
    return 1.0 if total == 0 else 2 * inter / total


def test_bf16_and_fp16_train_a_toy_network_as_well_as_fp32(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from segcli.data.synth import generate
    from segcli.engine import train
    from segcli.engine.runtime import set_quiet
    from segcli.io.checkpoint import load_checkpoint
    from segcli.models import build

    set_quiet(True)
    seen: dict[str, list[torch.dtype]] = {}
    compute_loss = train.compute_loss

    def recording_loss(
        loss_fn: nn.Module, output: Any, target: torch.Tensor, ml: bool, grids: Any = None
    ) -> Any:
        outputs = output if isinstance(output, list) else [output]
        seen.setdefault("loss_input", []).extend(o.dtype for o in outputs)
        return compute_loss(loss_fn, output, target, ml, grids=grids)

    monkeypatch.setattr(train, "compute_loss", recording_loss)
    test_cases = generate(12, dims=2, size=24, lesion=5, ring_distance=2, seed=7)
    test_cases = [c for c in test_cases if c.label.any()]
    results, predictions = {}, {}
    for precision in ("fp32", "bf16", "fp16"):
        seen.clear()
        exp = from_dict(_toy(precision))
        result = train.fit(exp, run_dir=tmp_path / precision, device="cpu")
        assert result.precision == precision
        assert set(seen["loss_input"]) == {torch.float32}  # loss computed on float32 logits
        record = json.loads((tmp_path / precision / "precision.json").read_text())
        assert record["precision"] == precision and record["requested"] == precision
        results[precision] = result.best_dice
        network = build(exp.model)
        network.load_state_dict(
            load_checkpoint(tmp_path / precision / "checkpoint_best.pt")["model"]
        )
        network.eval()
        predictions[precision] = [
            sliding_window(network, c.image[None], (24, 24), precision=precision).argmax(0).numpy()
            for c in test_cases
        ]
    assert results["fp32"] > 0.9  # the toy is learnt at all
    for precision in ("bf16", "fp16"):
        assert abs(results[precision] - results["fp32"]) < 0.03, results
        agree = np.mean(
            [
                (p == q).mean()
                for p, q in zip(predictions[precision], predictions["fp32"], strict=True)
            ]
        )
        assert agree >= 0.99, (precision, agree)
        dice = np.mean(
            [_dice(p, c.label) for p, c in zip(predictions[precision], test_cases, strict=True)]
        )
        assert dice > 0.9


def test_training_says_which_precision_ran_and_what_old_keys_mean(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from segcli.engine.runtime import set_quiet
    from segcli.engine.train import fit

    set_quiet(False)
    try:
        exp = from_dict(_toy(amp=False, epochs=1, iterations_per_epoch=1))
        fit(exp, run_dir=tmp_path / "run", device="cpu")
    finally:
        set_quiet(True)
    out = capsys.readouterr().out
    assert "warning: train.amp: false is the old spelling" in out
    assert "precision fp32 (set in the spec)" in out
    record = json.loads((tmp_path / "run" / "precision.json").read_text())
    assert record == {
        "precision": "fp32",
        "requested": "fp32",
        "device": "cpu",
        "reason": "set in the spec",
        "channels_last": False,  # a 2D network on CPU (segcli.precision.memory_format)
    }


def test_overlap_tile_runs_valid_networks_in_the_chosen_precision() -> None:
    from segcli.inference.overlap_tile import overlap_tile

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 6, 3), nn.ReLU(), nn.Conv2d(6, 3, 3)).eval()  # shrinks
    image = _smooth_image((30, 26))
    reference = overlap_tile(model, image, (16, 16), precision="fp32")
    probs = overlap_tile(model, image, (16, 16), precision="bf16")
    assert probs.dtype == torch.float32 and probs.shape == (3, 30, 26)
    assert torch.allclose(probs.sum(0), torch.ones(30, 26), atol=1e-5)
    assert 0 < (probs - reference).abs().max() < 0.05
    assert (probs.argmax(0) == reference.argmax(0)).float().mean() >= 0.99
