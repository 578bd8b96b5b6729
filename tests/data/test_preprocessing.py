from __future__ import annotations

import numpy as np
import pytest

from segcli.data.preprocessing import normalize


def test_zscore_per_channel() -> None:
    rng = np.random.default_rng(0)
    image = np.stack([rng.normal(100, 20, (8, 8)), rng.normal(-3, 0.1, (8, 8))])
    out = normalize(image, "zscore")
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.mean(axis=(1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(1, 2)), 1, atol=1e-4)


def test_constant_image_gives_zeros_not_nan() -> None:
    for scheme in ("zscore", "minmax"):
        out = normalize(np.full((1, 3, 3), 7.0), scheme)
        assert np.isfinite(out).all() and (out == 0).all()


def test_ct_window_and_minmax() -> None:
    image = np.array([[[-2000.0, -1000.0, 0.0, 1000.0, 3000.0]]])
    np.testing.assert_allclose(
        normalize(image, "ct", window=(-1000, 1000))[0, 0], [-1, -1, 0, 1, 1]
    )
    np.testing.assert_allclose(normalize(image, "minmax")[0, 0], [0, 0.2, 0.4, 0.6, 1])


def test_ct_auto_uses_dataset_statistics() -> None:
    stats = {"low": [-100.0], "high": [300.0], "mean": [100.0], "std": [50.0]}
    out = normalize(np.array([[[-500.0, 100.0, 1000.0]]]), "ct_auto", stats=stats)
    np.testing.assert_allclose(out[0, 0], [-4, 0, 4])
    with pytest.raises(ValueError, match="needs dataset statistics"):
        normalize(np.zeros((1, 2, 2)), "ct_auto")
