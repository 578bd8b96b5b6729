"""``segcli export``: TorchScript / ONNX files that reproduce the checkpoint, plus their spec."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from segcli.cli import app
from segcli.config import dump, load
from segcli.engine.export import export_model, read_metadata
from segcli.errors import CheckpointError, SegcliError, SpecError
from segcli.models import build


def _jit_load(path: Path) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():  # torch.jit is deprecated in torch 2.13, still shipped
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(path), map_location="cpu")


def _checkpoint_network(exp, path: Path) -> torch.nn.Module:
    from segcli.io.checkpoint import load_checkpoint

    network = build(exp.model)
    network.load_state_dict(load_checkpoint(path)["model"])
    return network.eval()


UNET = {"arch": "unet", "dims": 3, "filters": 2, "depth": 2, "classes": 3, "deep_supervision": True}


@pytest.mark.parametrize(
    "model,dims",
    [
        ({"arch": "dilated", "dims": 2, "filters": 3, "classes": 3, "dilations": [1, 2]}, 2),
        (UNET, 3),
        ({**UNET, "dims": 2, "padding": "valid", "deep_supervision": False}, 2),
    ],
)
def test_torchscript_reproduces_the_checkpoint(
    tmp_path: Path, make_experiment, make_checkpoint, model, dims
) -> None:
    patch = [44, 44] if model.get("padding") == "valid" else [16] * dims
    exp = make_experiment(
        tmp_path, dims=dims, model=model, data={"patch_size": patch, "spacing": "auto"}
    )
    stats = {"low": [-5.0], "high": [5.0], "mean": [0.5], "std": [2.0]}
    ckpt, _ = make_checkpoint(
        exp, tmp_path / "c.pt", seed=7, normalization_stats=stats, target_spacing=[1.5] * dims
    )
    out = tmp_path / "export" / "model.pt"
    result = export_model(exp, out, format="torchscript", checkpoint=ckpt)
    assert result.path == out and result.spec_path == tmp_path / "export" / "model.pt.yaml"
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.pt", "model.pt.yaml"]
    assert result.max_abs_difference < 1e-4
    exported = _jit_load(out)
    reference = _checkpoint_network(exp, ckpt)
    torch.manual_seed(1)
    for size in (patch, [p + 2 ** model.get("depth", 0) * 2 for p in patch]):
        x = torch.randn(2, 1, *size)
        with torch.no_grad():
            want = reference(x)
            got = exported(x)
        assert isinstance(got, torch.Tensor)  # eval mode: no deep-supervision list
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # the spec beside it loads, with the trained spacing in place of auto
    spec = load(result.spec_path)
    assert spec.data.spacing == [1.5] * dims and spec.model == exp.model
    meta = read_metadata(out)
    assert meta["normalization_stats"] == stats and meta["target_spacing"] == [1.5] * dims
    assert meta["spec"]["model"]["arch"] == model["arch"]


def test_onnx_reproduces_the_checkpoint_with_dynamic_sizes(
    tmp_path: Path, make_experiment, make_checkpoint
) -> None:
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = {"arch": "dilated", "dims": 2, "filters": 3, "classes": 3, "dilations": [1, 2]}
    exp = make_experiment(tmp_path, dims=2, model=model, data={"patch_size": [16, 16]})
    ckpt, _ = make_checkpoint(exp, tmp_path / "c.pt", seed=3)
    out = tmp_path / "model.onnx"
    result = export_model(exp, out, format="onnx", checkpoint=ckpt)
    assert result.max_abs_difference < 1e-4 and any("exporter" in n for n in result.notes)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("model", ".model"))) == [
        "model.onnx",
        "model.onnx.yaml",
    ]
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    reference = _checkpoint_network(exp, ckpt)
    for shape in ((1, 1, 16, 16), (3, 1, 21, 30)):  # other batch and spatial sizes too
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))
        got = session.run(None, {"image": x.numpy()})[0]
        with torch.no_grad():
            np.testing.assert_allclose(got, reference(x).numpy(), rtol=1e-4, atol=1e-5)
    assert read_metadata(out)["spec"]["model"] == exp.model.model_dump(mode="json")


def test_onnx_without_the_extra_is_a_clear_error(
    tmp_path: Path, make_experiment, make_checkpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    exp = make_experiment(tmp_path, dims=2, data={"patch_size": [8, 8]})
    ckpt, _ = make_checkpoint(exp, tmp_path / "c.pt")
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    with pytest.raises(SegcliError, match=r"pip install 'segcli\[export\]'"):
        export_model(exp, tmp_path / "m.onnx", format="onnx", checkpoint=ckpt)
    assert not list(tmp_path.glob("*m.onnx*"))


def test_bad_format_and_missing_checkpoint(tmp_path: Path, make_experiment) -> None:
    exp = make_experiment(tmp_path, dims=2, data={"patch_size": [8, 8]})
    with pytest.raises(SpecError, match="torchscript, onnx"):
        export_model(exp, tmp_path / "m.pt", format="tflite")
    with pytest.raises(CheckpointError, match="checkpoint_best.pt"):
        export_model(exp, tmp_path / "m.pt")
    assert not (tmp_path / "m.pt").exists()


def test_cli_export_defaults_to_the_runs_best_checkpoint(
    tmp_path: Path, make_experiment, make_checkpoint
) -> None:
    exp = make_experiment(tmp_path, dims=2, data={"patch_size": [8, 8]})
    spec = tmp_path / "exp.yaml"
    spec.write_text(dump(exp))
    run = Path(exp.output) / exp.name
    make_checkpoint(exp, run / "checkpoint_best.pt", seed=1)
    make_checkpoint(exp, run / "checkpoint_last.pt", seed=2)
    out = tmp_path / "m.pt"
    result = CliRunner().invoke(app, ["export", str(spec), "--output", str(out)])
    assert result.exit_code == 0, result.output
    x = torch.randn(1, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(
            _jit_load(out)(x), _checkpoint_network(exp, run / "checkpoint_best.pt")(x)
        )
    bad = CliRunner().invoke(app, ["export", str(spec), "--output", str(out), "--format", "x"])
    assert bad.exit_code == 1 and "Traceback" not in bad.output and "--format" in bad.output
