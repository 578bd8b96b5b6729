"""``segcli preprocess``: builds once, reuses, verifies; a synthetic spec has nothing to cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from typer.testing import CliRunner

from segcli.cli import app

runner = CliRunner()


def test_preprocess_builds_reuses_and_verify_rebuilds_a_damaged_case(
    tmp_path: Path, toy2d: Path
) -> None:
    spec = tmp_path / "p.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "p",
                "data": {
                    "root": str(toy2d),
                    "patch_size": [32, 32],
                    "cache_dir": str(tmp_path / "c"),
                },
                "model": {"arch": "cnn", "dims": 2},
            }
        )
    )
    first = runner.invoke(app, ["preprocess", str(spec), "--workers", "0"])
    n = len(list((toy2d / "labelsTr").iterdir()))
    assert first.exit_code == 0 and f"{n} built, 0 reused" in first.output, first.output
    second = runner.invoke(app, ["preprocess", str(spec)])
    assert second.exit_code == 0 and f"0 built, {n} reused" in second.output
    # damage one cached image in place, keeping its size and time: only --verify can tell
    image = next((tmp_path / "c").rglob("*_image.npy"))
    stat = image.stat()
    array = np.load(image)
    array.flat[0] += 1.0
    np.save(image, array)
    import os

    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    verify = runner.invoke(app, ["preprocess", str(spec), "--verify"])
    assert verify.exit_code == 0 and "rebuilt 1 case(s)" in verify.output, verify.output
    assert abs(float(np.load(image).flat[0]) - (float(array.flat[0]) - 1.0)) < 1e-5


def test_a_synthetic_spec_has_nothing_to_cache(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"data": {"synthetic": {"cases": 4}}, "model": {"arch": "cnn"}}))
    done = runner.invoke(app, ["preprocess", str(spec)])
    assert (
        done.exit_code == 1 and "data.synthetic" in done.output and "Traceback" not in done.output
    )
