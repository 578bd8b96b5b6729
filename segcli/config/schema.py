"""Pydantic models of the experiment spec (SPEC.md, "Experiment spec").

Every model forbids unknown keys and is frozen: a misspelt key is an error and no code can
change an experiment after it was loaded.  Architecture and loss options are discriminated
unions on ``model.arch`` and ``loss.name``.  Spatial tuples are in array axis order.
"""

from __future__ import annotations

import math
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

__all__ = [
    "ARCH_NAMES",
    "AUGMENT_PRESETS",
    "LOSS_NAMES",
    "AugmentSpec",
    "BlurSpec",
    "BrightnessSpec",
    "CNNSpec",
    "ContrastSpec",
    "DataSpec",
    "DiceCESpec",
    "DiceSpec",
    "DilatedSpec",
    "ElasticSpec",
    "EvaluationSpec",
    "Experiment",
    "FCNSpec",
    "FocalSpec",
    "GammaSpec",
    "InferenceSpec",
    "InvertedGammaSpec",
    "LossSpec",
    "LowResolutionSpec",
    "ModelSpec",
    "NoiseSpec",
    "PatchCNNSpec",
    "PlainLossSpec",
    "RotationSpec",
    "ScalingSpec",
    "SyntheticSpec",
    "TrainSpec",
    "UNetSpec",
    "WeightedCESpec",
    "fine_tune_warmup_epochs",
    "legacy_amp_precision",
]

MetricName = Literal[
    "dice",
    "iou",
    "precision",
    "recall",
    "hd",
    "hd95",
    "assd",
    "masd",
    "nsd",
    "vol_ref",
    "vol_pred",
    "cc_ref",
    "cc_pred",
    "lesion_tp",
    "lesion_fn",
    "lesion_fp",
    "lesion_f1",
]

#: Every metric column ``segcli evaluate`` knows (SPEC.md, "Metrics"), in SPEC order.
METRIC_NAMES: tuple[str, ...] = typing.get_args(MetricName)

PadMode = Literal["minimum", "edge", "reflect", "constant"]
Activation = Literal["relu", "leaky_relu", "gelu", "elu", "prelu"]
Norm = Literal["batch", "instance", "group", "none"]


class _Spec(BaseModel):
    # every key's meaning is the docstring under it (pydantic reads it: use_attribute_docstrings);
    # docs/spec.md is generated from them (make docs, segcli.config.reference)
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


# --------------------------------------------------------------------------- data


class SyntheticSpec(_Spec):
    """Generate the lecture's ring-lesion toy data in memory instead of reading ``data.root``."""

    dims: Literal[2, 3] = 2
    """2D or 3D toy images (must equal ``model.dims``)"""
    cases: int = Field(400, gt=1)
    """number of toy cases generated"""
    size: int = Field(32, gt=4)
    """edge length of every toy image in voxels"""
    lesion: int = Field(3, gt=0)
    """edge length of the square (cube) lesion in voxels"""
    ring_distance: int = Field(5, ge=1)
    """Chebyshev distance in voxels from a malign lesion's border to its one-voxel ring"""
    malign_fraction: float = Field(0.5, ge=0, le=1)
    """probability that a case's lesion is malign (ringed; only malign voxels are labelled)"""
    noise: float = Field(0.1, ge=0)
    """standard deviation of the Gaussian background noise (lesion and ring are 1)"""
    seed: int | None = None
    """seed of the toy data generator; null: the experiment's ``seed``"""

    @model_validator(mode="after")
    def _fits(self) -> SyntheticSpec:
        span = self.lesion + 2 * self.ring_distance  # the rule of segcli.data.synth
        if span > self.size:
            raise ValueError(
                f"a lesion of {self.lesion} with its ring at distance {self.ring_distance} spans "
                f"{span} voxels and does not fit size {self.size}; set data.synthetic.size to "
                f"{span} or more"
            )
        return self


def _range_check(
    low: float | None = None, high: float | None = None, low_open: bool = False
) -> AfterValidator:
    """A ``[low, high]`` range field: ordered, inside ``low``..``high`` (``low`` excluded when
    ``low_open``); the error names the bounds."""

    def check(value: tuple[float, float]) -> tuple[float, float]:
        a, b = value
        lower = "" if low is None else f"{low} {'<' if low_open else '≤'} "
        upper = "" if high is None else f" ≤ {high}"
        bounds = f"[low, high] with {lower}low ≤ high{upper}"
        if a > b or (low is not None and (a < low or (low_open and a == low))):
            raise ValueError(f"must be {bounds}, got [{a}, {b}]")
        if high is not None and b > high:
            raise ValueError(f"must be {bounds}, got [{a}, {b}]")
        return (float(a), float(b))

    return AfterValidator(check)


_Probability = Annotated[float, Field(ge=0, le=1)]


class RotationSpec(_Spec):
    """Random rotation of the training patch (one resampling with scaling and elastic)."""

    probability: _Probability = 0.2
    """probability that a patch is rotated (nnU-Net: 0.2)"""
    degrees: Annotated[tuple[float, float], _range_check(-180, 180)] | None = None
    """angle range in degrees, one angle drawn per rotation axis; null: nnU-Net's rule (3D:
    ±30° about every axis; 2D and anisotropic 3D: ±180° in the plane, ±15° for a 2D patch more
    than 1.5 times longer one way).  Anisotropic data (coarsest spacing more than 3 times the
    finest) rotate in the plane of the fine axes only"""


class ScalingSpec(_Spec):
    """Random zoom of the training patch (one resampling with rotation and elastic)."""

    probability: _Probability = 0.2
    """probability that a patch is scaled (nnU-Net: 0.2)"""
    factor: Annotated[tuple[float, float], _range_check(0, low_open=True)] = (0.7, 1.4)
    """range of the factor applied to the sampling grid, one for every axis (nnU-Net: 0.7 to
    1.4): above 1 zooms out (structures look smaller); anisotropic data scale in-plane only"""


class ElasticSpec(_Spec):
    """Random smooth deformation of the training patch (off in nnU-Net v2)."""

    probability: _Probability = 0.0
    """probability that a patch is deformed (nnU-Net v2: 0, off)"""
    sigma: Annotated[tuple[float, float], _range_check(0, low_open=True)] = (9.0, 13.0)
    """smoothness of the displacement field: Gaussian sigma in voxels, per axis (nnU-Net v1:
    9 to 13)"""
    magnitude: Annotated[tuple[float, float], _range_check(0)] = (0.0, 8.0)
    """largest displacement in voxels, per axis (nnU-Net v1's alpha 0 to 900 with sigma 9 to 13
    displaces by up to about 10 voxels)"""


class _IntensityTransform(_Spec):
    channel_probability: _Probability = 1.0
    """probability that a fired transform changes each channel (drawn per channel)"""


class NoiseSpec(_IntensityTransform):
    """Additive Gaussian noise."""

    probability: _Probability = 0.1
    """probability that noise is added to a patch (nnU-Net: 0.1)"""
    std: Annotated[tuple[float, float], _range_check(0)] = (0.0, 0.1)
    """range of the noise's standard deviation, one drawn per patch, in the units of the
    normalised image (nnU-Net: 0 to 0.1)"""


class BlurSpec(_IntensityTransform):
    """Gaussian blur (scipy.ndimage.gaussian_filter); in-plane only on anisotropic data."""

    probability: _Probability = 0.2
    """probability that a patch is blurred (nnU-Net: 0.2)"""
    sigma: Annotated[tuple[float, float], _range_check(0)] = (0.5, 1.0)
    """range of the Gaussian sigma in voxels, drawn per channel and axis (nnU-Net: 0.5 to 1)"""
    channel_probability: _Probability = 0.5
    """probability that a fired blur changes each channel (nnU-Net: 0.5)"""


class BrightnessSpec(_IntensityTransform):
    """Multiplicative brightness: each channel times a factor."""

    probability: _Probability = 0.15
    """probability that a patch's brightness changes (nnU-Net: 0.15)"""
    factor: Annotated[tuple[float, float], _range_check(0, low_open=True)] = (0.75, 1.25)
    """range of the factor, drawn per channel; below and above 1 equally often when the range
    straddles 1 (nnU-Net: 0.75 to 1.25)"""


class ContrastSpec(_IntensityTransform):
    """Contrast: each channel's deviation from its mean times a factor, clipped to its range."""

    probability: _Probability = 0.15
    """probability that a patch's contrast changes (nnU-Net: 0.15)"""
    factor: Annotated[tuple[float, float], _range_check(0)] = (0.75, 1.25)
    """range of the factor, drawn per channel; below and above 1 equally often when the range
    straddles 1 (nnU-Net: 0.75 to 1.25)"""


class GammaSpec(_IntensityTransform):
    """Gamma: each channel rescaled to [0, 1], raised to a power, mapped back (mean and
    standard deviation kept)."""

    probability: _Probability = 0.3
    """probability that a patch gets a gamma (nnU-Net: 0.3)"""
    gamma: Annotated[tuple[float, float], _range_check(0, low_open=True)] = (0.7, 1.5)
    """range of the exponent, drawn per channel; below and above 1 equally often when the range
    straddles 1 (nnU-Net: 0.7 to 1.5)"""


class InvertedGammaSpec(GammaSpec):
    """Gamma of the negated image (brightens dark structures where a gamma darkens them)."""

    probability: _Probability = 0.1
    """probability that a patch gets an inverted gamma (nnU-Net: 0.1)"""


class LowResolutionSpec(_IntensityTransform):
    """Low-resolution simulation: each channel downsampled (nearest), then upsampled (linear);
    in-plane only on anisotropic data."""

    probability: _Probability = 0.25
    """probability that a patch is degraded (nnU-Net: 0.25)"""
    zoom: Annotated[tuple[float, float], _range_check(0, 1, low_open=True)] = (0.5, 1.0)
    """range of the downsampling factor, one per channel for every axis (nnU-Net: 0.5 to 1)"""
    channel_probability: _Probability = 0.5
    """probability that a fired simulation changes each channel (nnU-Net: 0.5)"""


#: what ``data.augment.preset`` fills in: every transform the spec leaves unset, with its
#: defaults (nnU-Net v2's nnUNetTrainer values); flips are ``flip``/``probability`` (0.5 per axis)
AUGMENT_PRESETS: dict[str, tuple[str, ...]] = {
    "nnunet": (
        "rotation",
        "scaling",
        "elastic",
        "noise",
        "blur",
        "brightness",
        "contrast",
        "low_resolution",
        "inverted_gamma",
        "gamma",
    ),
}


class AugmentSpec(_Spec):
    """Training patch augmentation: the simple set (flip, rotate90, intensity, one probability)
    and nnU-Net's transforms, each with its probability and ranges (``preset: nnunet`` sets them
    all).  Applied in this order: rotation/scaling/elastic (one resampling of a larger crop),
    noise, blur, brightness, contrast, low_resolution, inverted_gamma, gamma, flips, rotate90,
    intensity."""

    flip: bool = True
    """mirror each spatial axis of a training patch independently"""
    rotate90: bool = False
    """rotate training patches by a multiple of 90° in a plane of equal size and similar spacing"""
    intensity: bool = False
    """scale each channel by 0.9 to 1.1 and shift it by up to 0.1 of its standard deviation
    (the label is untouched); for other ranges use brightness, contrast and gamma"""
    probability: float = Field(0.5, ge=0, le=1)
    """probability that flip (per axis), rotate90 and intensity are applied to a patch"""
    flip_axes: list[Annotated[int, Field(ge=0)]] | None = None
    """the axes flips mirror (array axis order); null: every axis"""
    preset: Literal["nnunet"] | None = None
    """``nnunet``: every transform below that the spec leaves out, with nnU-Net v2's
    probabilities and ranges (override one next to it, e.g. ``elastic: {probability: 0.2}``;
    null leaves it out)"""
    rotation: RotationSpec | None = None
    """random rotation; null: none"""
    scaling: ScalingSpec | None = None
    """random scaling; null: none"""
    elastic: ElasticSpec | None = None
    """random elastic deformation; null: none"""
    interpolation: Literal["linear", "cubic"] = "linear"
    """image interpolation of rotation, scaling and elastic: ``linear`` (nnU-Net) or ``cubic``
    (B-spline)"""
    label_interpolation: Literal["onehot", "nearest"] = "onehot"
    """label interpolation of rotation, scaling and elastic: ``onehot`` (each class's indicator
    linearly, then the largest; nnU-Net) or ``nearest``"""
    noise: NoiseSpec | None = None
    """additive Gaussian noise; null: none"""
    blur: BlurSpec | None = None
    """Gaussian blur; null: none"""
    brightness: BrightnessSpec | None = None
    """multiplicative brightness; null: none"""
    contrast: ContrastSpec | None = None
    """contrast; null: none"""
    low_resolution: LowResolutionSpec | None = None
    """low-resolution simulation; null: none"""
    inverted_gamma: InvertedGammaSpec | None = None
    """gamma of the inverted image; null: none"""
    gamma: GammaSpec | None = None
    """gamma; null: none"""

    @model_validator(mode="before")
    @classmethod
    def _fill_preset(cls, data: Any) -> Any:
        # the preset's transforms the spec leaves out get their defaults; a transform set to
        # null stays off, one given as a mapping overrides the defaults key by key
        if isinstance(data, dict) and data.get("preset") in AUGMENT_PRESETS:
            data = dict(data)
            for key in AUGMENT_PRESETS[data["preset"]]:
                data.setdefault(key, {})
        return data

    @field_validator("flip_axes")
    @classmethod
    def _distinct_axes(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError(f"lists an axis twice: {value}")
        return value


class DataSpec(_Spec):
    root: str | None = None
    """dataset folder in the nnU-Net / MSD layout (imagesTr, labelsTr); or set ``synthetic``"""
    synthetic: SyntheticSpec | None = None
    """generate the lecture's toy data in memory instead of reading ``root``"""
    val_fraction: float = Field(0.2, ge=0, lt=1)
    """share of the cases held out for validation (0: no validation)"""
    train_cases: list[str] | None = None
    """explicit training case names (instead of the ``val_fraction`` split)"""
    val_cases: list[str] | None = None
    """explicit validation case names (instead of the ``val_fraction`` split)"""
    patch_size: list[Annotated[int, Field(gt=0)]] = Field(default_factory=lambda: [32, 32])
    """training patch size in voxels, one entry per axis (array axis order)"""
    foreground_fraction: float = Field(0.33, ge=0, le=1)
    """share of training patches centred on a foreground voxel (the rest: anywhere)"""
    normalization: Literal["zscore", "ct", "ct_auto", "minmax", "none"] = "zscore"
    """intensity normalisation: ``zscore`` (mean 0, std 1 per image and channel), ``ct`` (clip
    to ``window``, scale to [-1, 1]), ``ct_auto`` (nnU-Net's CT scheme: clip to the training
    set's foreground percentiles, z-score with its foreground mean and std), ``minmax`` ([0, 1]
    per image) or ``none``"""
    window: tuple[float, float] = (-1000.0, 1000.0)
    """intensity window [low, high] for ``normalization: ct`` (HU)"""
    spacing: list[Annotated[float, Field(gt=0)]] | Literal["auto"] | None = None
    """resample to this spacing (array axis order, mm); ``auto`` = the dataset median; null =
    keep"""
    resample_order: Literal[0, 1, 3] = 3
    """image interpolation when resampling: 0 nearest, 1 linear, 3 cubic B-spline (nnU-Net)"""
    label_resampling: Literal["onehot", "nearest"] = "onehot"
    """label resampling: ``onehot`` (each class's share by cubic B-spline, then argmax) or
    ``nearest``"""
    augment: AugmentSpec = AugmentSpec()
    """training patch augmentation"""
    crop_nonzero: bool = True
    """crop every case to the bounding box of its non-zero voxels before anything else
    (nnU-Net); predict crops alike and pastes the label map back into the full grid"""
    cache: Literal["auto", "memory", "disk"] = "auto"
    """where training reads patches from, once ``data.root`` is preprocessed into the cache:
    ``memory`` (every case loaded), ``disk`` (patches read from the cache files by the loader
    workers: memory flat in the number of cases), ``auto`` (memory when the training and
    validation cases take at most 1 GiB, else disk)"""
    cache_dir: str | None = None
    """folder of the preprocessing cache (null: $SEGCLI_CACHE, else
    ~/.cache/segcli/preprocessed)"""
    folds: int | None = Field(None, ge=2)
    """K for K-fold cross-validation: nnU-Net's split (or the dataset's splits_final.json);
    ``segcli train --fold k|all`` trains folds into ``<output>/<name>/fold_<k>``"""
    fold: int | None = Field(None, ge=0)
    """the fold one run trains (0..folds-1; what ``--fold k`` sets); null: the whole CV run"""

    @field_validator("cache", mode="before")
    @classmethod
    def _legacy_cache(cls, value: Any) -> Any:
        # data.cache was a boolean that no code read (true = in memory, the default)
        if isinstance(value, bool):
            return "auto" if value else "disk"
        return value

    @model_validator(mode="after")
    def _check(self) -> DataSpec:
        if self.root is None and self.synthetic is None:
            raise ValueError("set data.root (a dataset folder) or data.synthetic (toy data)")
        if self.window[0] >= self.window[1]:
            raise ValueError(f"data.window must be [low, high] with low < high, got {self.window}")
        axes = self.augment.flip_axes or []
        if any(axis >= len(self.patch_size) for axis in axes):
            raise ValueError(
                f"data.augment.flip_axes {axes} names an axis the {len(self.patch_size)}D "
                f"data.patch_size {self.patch_size} does not have; use 0..{len(self.patch_size) - 1}"
            )
        if self.fold is not None:
            if self.folds is None:
                raise ValueError(
                    f"data.fold is {self.fold} but data.folds is not set; set data.folds to K "
                    "for K-fold cross-validation"
                )
            if self.fold >= self.folds:
                raise ValueError(
                    f"data.fold {self.fold} is outside 0..{self.folds - 1} (data.folds is "
                    f"{self.folds})"
                )
        if self.folds is not None and (self.train_cases or self.val_cases):
            raise ValueError(
                "data.folds splits the cases itself; leave data.train_cases and data.val_cases "
                "unset (or put the split in the dataset's splits_final.json)"
            )
        return self


# --------------------------------------------------------------------------- models


class _ModelBase(_Spec):
    dims: Literal[2, 3] = 2
    """2D or 3D network (``data.patch_size`` and ``inference.patch_size`` have this many axes)"""
    in_channels: int = Field(1, gt=0)
    """input channels (image modalities: ``_0000``, ``_0001`` ... files per case)"""
    classes: int | None = Field(None, gt=0)
    """number of output classes including background (or of labels, when multilabel); null:
    the number of ``labels``, else 2"""
    labels: dict[int, str] | None = None
    """alternative to ``classes``: {0: background, 1: lesion, ...}"""
    filters: int = Field(8, gt=0)
    """feature maps of every convolution"""

    @model_validator(mode="after")
    def _classes(self) -> _ModelBase:
        if self.classes is None and self.labels is None:
            object.__setattr__(self, "classes", 2)
        elif self.classes is None:
            object.__setattr__(self, "classes", len(self.labels or {}))
        elif self.labels is not None and len(self.labels) != self.classes:
            raise ValueError(
                f"model.classes is {self.classes} but model.labels names {len(self.labels)}"
            )
        return self

    @property
    def num_classes(self) -> int:
        assert self.classes is not None
        return self.classes


class CNNSpec(_ModelBase):
    """The lecture's all-convolutional network: ``layers`` k×k convolutions + ReLU, 1×1 head."""

    arch: Literal["cnn"] = "cnn"
    """the architecture (selects this table)"""
    layers: int = Field(3, gt=0)
    """number of k×k convolution + activation layers before the 1×1 head"""
    kernel_size: int = Field(3, gt=0)
    """convolution kernel size k"""
    padding: Literal["same", "front", "valid"] = "same"
    """``same``: pad every layer; ``front``: pad once up front (the lecture); ``valid``: none"""
    pad_mode: Literal["zeros", "reflect", "replicate"] = "zeros"
    """what the padding fills in"""
    activation: Activation = "relu"
    """activation after every convolution"""
    norm: Norm = "none"
    """normalisation layer after every convolution"""


class DilatedSpec(_ModelBase):
    """As ``cnn`` with one dilation rate per layer (Yu & Koltun 2016)."""

    arch: Literal["dilated"] = "dilated"
    """the architecture (selects this table)"""
    dilations: list[Annotated[int, Field(gt=0)]] = Field(default_factory=lambda: [1, 2, 4])
    """dilation rate of each convolution layer (one layer per entry)"""
    kernel_size: int = Field(3, gt=0)
    """convolution kernel size k"""
    padding: Literal["same", "front", "valid"] = "same"
    """``same``: pad every layer; ``front``: pad once up front (the lecture); ``valid``: none"""
    pad_mode: Literal["zeros", "reflect", "replicate"] = "zeros"
    """what the padding fills in"""
    activation: Activation = "relu"
    """activation after every convolution"""
    norm: Norm = "none"
    """normalisation layer after every convolution"""


class PatchCNNSpec(_ModelBase):
    """Ciresan et al. 2012 sliding-window pixel classifier (conv/max-pool stages, then FC)."""

    arch: Literal["patch_cnn"] = "patch_cnn"
    """the architecture (selects this table)"""
    filters: int = Field(48, gt=0)
    """feature maps of every convolution stage"""
    input_size: int = Field(95, gt=0)
    """edge length of the window the classifier sees"""
    kernel_sizes: list[Annotated[int, Field(gt=0)]] = Field(default_factory=lambda: [4, 5, 4, 4])
    """kernel size of each convolution + 2×2 max-pooling stage (one stage per entry)"""
    hidden: int = Field(200, gt=0)
    """units of the fully connected hidden layer"""
    mode: Literal["dense", "window"] = "dense"
    """``dense``: one prediction per input pixel (pooling strides turned into dilations, same
    weights); ``window``: the lecture's classifier, one prediction per ``input_size`` window"""
    padding: Literal["same", "valid"] = "same"
    """dense mode: ``same`` pads the input by half a window (output = input size); ``valid`` not"""
    pad_mode: Literal["zeros", "reflect", "replicate"] = "zeros"
    """what the padding fills in"""
    activation: Activation = "relu"
    """activation after every convolution"""


class FCNSpec(_ModelBase):
    """Long et al. 2015: VGG-style encoder, class scores fused across resolutions."""

    arch: Literal["fcn"] = "fcn"
    """the architecture (selects this table)"""
    filters: int = Field(16, gt=0)
    """feature maps of the first stage (doubling per stage up to ``max_filters``)"""
    variant: Literal["32s", "16s", "8s"] = "8s"
    """FCN-32s, -16s or -8s: class scores fused across 1, 2 or 3 resolutions (finest output
    stride 32, 16 or 8)"""
    convs_per_stage: list[Annotated[int, Field(gt=0)]] = Field(
        default_factory=lambda: [2, 2, 3, 3, 3]
    )
    """convolutions per VGG stage; 5 stages of pooling as in VGG-16 by default"""
    max_filters: int = Field(512, gt=0)
    """cap on the feature maps of a stage"""
    norm: Norm = "none"
    """normalisation layer after every convolution"""
    fc_filters: int | None = Field(None, gt=0)
    """width of the convolutionalised fully connected layers fc6/fc7 (null: the last stage's)"""
    fc_kernel: int = Field(3, gt=0)
    """kernel of fc6 (VGG's 7×7 fully connected layer; 3 keeps toy models small); odd"""


def _check_per_axis(key: str, entries: list[list[int]], dims: int, item: str, plural: str) -> None:
    """Each of ``model.<key>``'s entries has one value ≥ 1 per spatial axis."""
    for i, entry in enumerate(entries):
        if len(entry) != dims:
            raise ValueError(
                f"model.{key}[{i}] {entry} has {len(entry)} entries but model.dims is {dims}; "
                f"give one {item} per axis (array axis order)"
            )
        if any(v < 1 for v in entry):
            raise ValueError(f"model.{key}[{i}] {entry}: {plural} must be 1 or more")


class UNetSpec(_ModelBase):
    """Ronneberger et al. 2015 and modern variants (nnU-Net style with ``same`` padding)."""

    arch: Literal["unet"] = "unet"
    """the architecture (selects this table)"""
    filters: int = Field(32, gt=0)
    """feature maps of the first level (doubling per level, capped by ``max_filters``)"""
    depth: int = Field(4, ge=1)
    """number of downsamplings (pooling steps) of the encoder"""
    max_filters: int | None = Field(None, gt=0)
    """cap on the feature maps of a level (null: no cap)"""
    convs_per_block: int = Field(2, gt=0)
    """convolutions per encoder and decoder block"""
    kernel_size: int = Field(3, gt=0)
    """convolution kernel size on every axis (see ``kernel_sizes`` for per-stage kernels)"""
    padding: Literal["same", "valid"] = "same"
    """``same``: output size = input size; ``valid``: no padding (the 2015 U-Net, output shrinks)"""
    upsample: Literal["transpose", "interp"] = "transpose"
    """decoder upsampling: transposed convolution, or (bi/tri)linear interpolation and a 1×1
    convolution"""
    residual: bool = False
    """residual connections around each block's convolutions"""
    norm: Norm = "instance"
    """normalisation layer after every convolution"""
    activation: Activation = "leaky_relu"
    """activation after every convolution"""
    dropout: float = Field(0.0, ge=0, lt=1)
    """dropout probability at the end of every block"""
    deep_supervision: bool = False
    """train with extra outputs at lower decoder resolutions (nnU-Net's deep supervision)"""
    strides: list[list[int]] | None = None
    """pooling stride per downsampling and axis (array axis order), e.g. [[1, 2, 2], [2, 2, 2]]
    (nnU-Net's pool_op_kernel_sizes); null: 2 on every axis; sets depth when depth is not given"""
    kernel_sizes: list[list[int]] | None = None
    """kernel per resolution stage (depth + 1: encoder stages and bottleneck) and axis, e.g.
    [[1, 3, 3], [3, 3, 3], [3, 3, 3]]; decoder blocks use their stage's; null: kernel_size"""

    @model_validator(mode="after")
    def _stages(self) -> UNetSpec:
        dims = self.dims
        if self.strides is not None:
            if not self.strides:
                raise ValueError("model.strides is empty; give one stride per axis per stage")
            _check_per_axis("strides", self.strides, dims, "stride", "strides")
            if "depth" not in self.model_fields_set:
                object.__setattr__(self, "depth", len(self.strides))
            elif len(self.strides) != self.depth:
                raise ValueError(
                    f"model.strides has {len(self.strides)} stages but model.depth is "
                    f"{self.depth}; give one stride entry per downsampling (or leave out "
                    "model.depth: it follows model.strides)"
                )
        if self.kernel_sizes is not None:
            if len(self.kernel_sizes) != self.depth + 1:
                raise ValueError(
                    f"model.kernel_sizes has {len(self.kernel_sizes)} stages but model.depth is "
                    f"{self.depth}; give depth + 1 = {self.depth + 1} entries (the encoder "
                    "stages and the bottleneck)"
                )
            _check_per_axis("kernel_sizes", self.kernel_sizes, dims, "kernel size", "sizes")
            for i, entry in enumerate(self.kernel_sizes):
                if self.padding == "same" and any(v % 2 == 0 for v in entry):
                    raise ValueError(
                        f"model.kernel_sizes[{i}] {entry}: a same-padding U-Net needs odd "
                        "kernel sizes (1, 3, 5, ...; or padding: valid)"
                    )
            if self.kernel_size != 3:
                raise ValueError(
                    f"model.kernel_size {self.kernel_size} and model.kernel_sizes are both set; "
                    "kernel_sizes gives every stage's kernel, remove kernel_size"
                )
        return self

    @property
    def stage_strides(self) -> list[tuple[int, ...]]:
        """The pooling stride per downsampling and axis (``strides`` or 2 everywhere)."""
        if self.strides is None:
            return [(2,) * self.dims] * self.depth
        return [tuple(entry) for entry in self.strides]

    @property
    def stage_kernel_sizes(self) -> list[tuple[int, ...]]:
        """The convolution kernel per resolution stage and axis (``depth + 1`` entries)."""
        if self.kernel_sizes is None:
            return [(self.kernel_size,) * self.dims] * (self.depth + 1)
        return [tuple(entry) for entry in self.kernel_sizes]


ModelSpec = Annotated[
    CNNSpec | DilatedSpec | PatchCNNSpec | FCNSpec | UNetSpec, Field(discriminator="arch")
]
ARCH_NAMES = ("cnn", "dilated", "fcn", "patch_cnn", "unet")


# --------------------------------------------------------------------------- losses


class PlainLossSpec(_Spec):
    """Binary (``bce``: sigmoid per foreground channel) or categorical cross-entropy."""

    name: Literal["bce", "ce"]
    """the loss (selects this table)"""


class WeightedCESpec(_Spec):
    name: Literal["weighted_ce"]
    """the loss (selects this table)"""
    weights: Literal["auto"] | list[Annotated[float, Field(ge=0)]] = "auto"
    """one weight per class; ``auto``: inversely proportional to class frequency in the training
    labels, normalised"""


class DiceSpec(_Spec):
    name: Literal["dice"]
    """the loss (selects this table)"""
    smooth: float = Field(1.0, ge=0)
    """additive smoothing term of the soft Dice (numerator and denominator)"""
    batch: bool = False
    """pool the sums over the whole batch (nnU-Net's batch dice) instead of per sample"""
    include_background: bool = False
    """average the background channel's Dice too"""


class DiceCESpec(_Spec):
    name: Literal["dice_ce"]
    """the loss (selects this table)"""
    smooth: float = Field(1.0, ge=0)
    """additive smoothing term of the soft Dice (numerator and denominator)"""
    batch: bool = False
    """pool the Dice sums over the whole batch (nnU-Net's batch dice) instead of per sample"""
    include_background: bool = False
    """average the background channel's Dice too"""
    dice_weight: float = Field(1.0, ge=0)
    """weight of the Dice term in the sum"""
    ce_weight: float = Field(1.0, ge=0)
    """weight of the cross-entropy term (BCE when multilabel) in the sum"""


class FocalSpec(_Spec):
    name: Literal["focal"]
    """the loss (selects this table)"""
    gamma: float = Field(2.0, ge=0)
    """focusing exponent: (1 − p_t)^gamma down-weights easy voxels (0: cross-entropy)"""
    alpha: float | None = Field(None, ge=0, le=1)
    """weight of foreground voxels (background: 1 − alpha); null: unweighted"""


LossSpec = Annotated[
    PlainLossSpec | WeightedCESpec | DiceSpec | DiceCESpec | FocalSpec,
    Field(discriminator="name"),
]
LOSS_NAMES = ("bce", "ce", "dice", "dice_ce", "focal", "weighted_ce")


# --------------------------------------------------------------------------- train / infer / eval


class TrainSpec(_Spec):
    epochs: int = Field(20, gt=0)
    """number of epochs"""
    iterations_per_epoch: int = Field(100, gt=0)
    """optimiser steps per epoch (patches are drawn at random, so an epoch is a step count)"""
    batch_size: int = Field(16, gt=0)
    """patches per optimiser step (per process under torchrun)"""
    optimizer: Literal["adamw", "sgd"] = "adamw"
    """AdamW, or SGD with (Nesterov) momentum as nnU-Net"""
    lr: float = Field(1e-3, gt=0)
    """base learning rate (peak of the schedule)"""
    weight_decay: float = Field(1e-4, ge=0)
    """weight decay of the optimiser"""
    momentum: float = Field(0.99, ge=0, lt=1)
    """SGD momentum (sgd only)"""
    nesterov: bool = True
    """Nesterov momentum (sgd only, with momentum > 0)"""
    schedule: Literal["poly", "cosine", "constant"] = "poly"
    """learning-rate schedule per step after the warm-up: ``poly`` (1 − t)^0.9 (nnU-Net),
    ``cosine`` or ``constant``"""
    warmup_epochs: int = Field(0, ge=0)
    """epochs of linear learning-rate warm-up before the schedule (0; a fine-tuning run,
    ``init_from``, that leaves it out: 5% of the epochs, at least one)"""
    grad_clip: float | None = Field(12.0, gt=0)
    """clip the gradient norm to this value (null: no clipping)"""
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """network precision (segcli.precision): ``auto`` = bf16 on CPUs with bf16 instructions
    and on Ampere+ GPUs, fp16 with a gradient scaler on older GPUs, else fp32"""
    amp: bool | None = Field(None, exclude=True)
    """retired spelling of ``precision`` (CUDA-only autocast on/off); still read, never written
    back"""
    amp_dtype: Literal["bf16", "fp16"] | None = Field(None, exclude=True)
    """retired spelling of ``precision`` (the autocast dtype); still read, never written back"""
    compile: bool = False
    """run the training step through ``torch.compile``"""
    workers: int = Field(2, ge=0)
    """DataLoader worker processes drawing patches (0: in the training process)"""
    val_every: int = Field(1, gt=0)
    """validate every N epochs (the last epoch is always validated)"""
    val_max_cases: int | None = Field(None, gt=0)
    """validate on at most this many cases (null: all)"""
    init_from: str | None = None
    """fine-tune: start from the weights of this checkpoint (a ``.pt`` file, or a run folder:
    its checkpoint_best.pt); every layer must fit except the output layer(s), which a different
    number of classes re-initialises.  Unless ``warmup_epochs`` is given, the learning rate
    then warms up linearly over the first 5% of the epochs (at least one).  Not applied again
    by ``--resume``"""

    @model_validator(mode="after")
    def _legacy_amp(self) -> TrainSpec:
        legacy = legacy_amp_precision(self.amp, self.amp_dtype)
        if legacy is not None and "precision" not in self.model_fields_set:
            object.__setattr__(self, "precision", legacy[0])
        return self

    @model_validator(mode="after")
    def _fine_tune_warmup(self) -> TrainSpec:
        # written into the resolved spec (config.yaml), so a resumed run keeps the same schedule
        if self.init_from is not None and "warmup_epochs" not in self.model_fields_set:
            object.__setattr__(self, "warmup_epochs", fine_tune_warmup_epochs(self.epochs))
        return self

    @property
    def legacy_note(self) -> str | None:
        """What the retired ``amp`` / ``amp_dtype`` keys of this spec now mean (None: absent)."""
        legacy = legacy_amp_precision(self.amp, self.amp_dtype)
        if legacy is None:
            return None
        if "precision" in self.model_fields_set:
            return (
                f"train.amp / train.amp_dtype are ignored: train.precision: {self.precision} "
                "is set and supersedes them; delete the old keys"
            )
        return legacy[1]


def fine_tune_warmup_epochs(epochs: int) -> int:
    """The warm-up of a fine-tuning run (``train.init_from``) that leaves out ``warmup_epochs``:
    5% of the epochs, at least one (nnU-Net's warm-up trainer ramps up over 50 of 1050 epochs)."""
    return max(1, math.ceil(epochs / 20))


def legacy_amp_precision(amp: bool | None, amp_dtype: str | None) -> tuple[str, str] | None:
    """What the retired ``train.amp`` / ``train.amp_dtype`` keys mean as ``train.precision``.

    Returns:
        ``(precision, message)``, or None when neither key was given.  ``amp: false`` is
        ``fp32``; ``amp_dtype: bf16|fp16`` (with ``amp`` true or absent) is that precision
        on every device; ``amp: true`` alone is ``auto``.
    """
    if amp is None and amp_dtype is None:
        return None
    if amp is False:
        precision = "fp32"
    elif amp_dtype is not None:
        precision = amp_dtype
    else:
        precision = "auto"
    given = ", ".join(
        f"train.{key}: {str(value).lower()}"
        for key, value in (("amp", amp), ("amp_dtype", amp_dtype))
        if value is not None
    )
    message = (
        f"{given} is the old spelling (CUDA-only mixed precision); it now means "
        f"train.precision: {precision} (applies on CPU too: auto picks bf16 or fp16 per device "
        f"and fp32 where reduced precision does not pay). Write train.precision instead."
    )
    return precision, message


class PostprocessSpec(_Spec):
    largest_component: bool = False
    """keep only the largest connected component of each foreground label"""
    min_size: int = Field(0, ge=0)
    """remove connected components smaller than this many voxels (0: keep all)"""
    fill_holes: bool = False
    """fill background holes enclosed by a label"""


class InferenceSpec(_Spec):
    patch_size: list[Annotated[int, Field(gt=0)]] = Field(default_factory=list)
    """sliding-window size in voxels per axis; empty or null: ``data.patch_size`` (filled by
    Experiment validation, so an Experiment's inference.patch_size is always a full list)"""
    overlap: float = Field(0.5, ge=0, lt=1)
    """least overlap of neighbouring windows, as a share of the window"""
    blend: Literal["gaussian", "constant"] = "gaussian"
    """weight of each window's voxels when summing: gaussian (σ = patch/8 per axis) or constant"""
    batch_size: int = Field(8, gt=0)
    """windows per forward pass"""
    tta: bool = False
    """test-time augmentation: average the probabilities over every combination of mirrored
    axes"""
    pad_mode: PadMode = "minimum"
    """how an image smaller than the window is padded: its own minimum, edge, reflect, or
    ``constant`` with ``pad_value``"""
    pad_value: float = 0.0
    """the fill value of ``pad_mode: constant``"""
    postprocess: PostprocessSpec = PostprocessSpec()
    """clean-up of the predicted label maps"""
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """network precision for predict (segcli.precision; ``auto`` as for train.precision)"""

    @field_validator("patch_size", mode="before")
    @classmethod
    def _null_patch_size(cls, value: Any) -> Any:
        return [] if value is None else value


class EvaluationSpec(_Spec):
    metrics: list[MetricName] = Field(
        default_factory=lambda: ["dice", "iou", "hd95", "assd", "nsd"]
    )
    """metric columns of ``segcli evaluate``, in this order"""
    nsd_tolerance: float = Field(1.0, ge=0)
    """NSD tolerance τ in mm"""
    labels: list[Annotated[int, Field(gt=0)]] | None = None
    """foreground labels to score; null: the reference folder's dataset.json, else every
    non-zero value found"""


# --------------------------------------------------------------------------- root


class Experiment(_Spec):
    name: str = Field(
        "experiment", min_length=1, pattern=r"^[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*$"
    )
    """run folder name: letters, digits, '.', '_', '-' and not dots only ('..' would escape
    output)"""
    seed: int = 0
    """seed of every random choice (split, patches, augmentation, initial weights)"""
    data: DataSpec
    """the data set, its split, preprocessing and patch sampling"""
    model: ModelSpec
    """the network; ``model.arch`` picks the architecture and its keys"""
    loss: LossSpec = DiceCESpec(name="dice_ce")
    """the training loss; ``loss.name`` picks it and its keys"""
    multilabel: bool = False
    """sigmoid per label (overlapping labels) instead of softmax over classes"""
    regions: dict[str, list[int]] | None = None
    """region-based training (nnU-Net's regions): output channel name → the label values it
    covers, outer regions first (order matters: later regions are drawn over earlier ones
    when predictions are written as labels), e.g. {organ: [1, 2], lesion: [2]}; sigmoid per
    channel (implies multilabel: true), model.classes = number of regions (see segcli.labels)"""
    train: TrainSpec = TrainSpec()
    """the optimisation: epochs, optimiser, schedule, precision"""
    inference: InferenceSpec = InferenceSpec()
    """sliding-window prediction (``segcli predict`` and validation)"""
    evaluation: EvaluationSpec = EvaluationSpec()
    """what ``segcli evaluate`` scores"""
    output: str = "runs"
    """parent folder of the run folder (run folder = output/name)"""
    ensemble: list[str] = Field(default_factory=list)
    """other trained runs whose models ``segcli predict`` averages with this spec's: each a run
    folder (a cross-validated run's folder: all its folds), predicted with its own config.yaml
    (network, preprocessing, windows); ``segcli study`` writes it into best.yaml when the top
    two variants together score higher out of fold"""

    @property
    def run_folder(self) -> Path:
        """``<output>/<name>``, and ``/fold_<k>`` inside it for one fold of a CV run."""
        base = Path(self.output) / self.name
        return base if self.data.fold is None else base / f"fold_{self.data.fold}"

    @property
    def cv_folder(self) -> Path:
        """``<output>/<name>``: where a cross-validated run's folds and out-of-fold files are."""
        return Path(self.output) / self.name

    @field_validator("regions")
    @classmethod
    def _check_regions(cls, value: dict[str, list[int]] | None) -> dict[str, list[int]] | None:
        if value is None:
            return None
        from segcli.labels import as_regions, region_problems

        problems = region_problems(as_regions(value), list(value))
        if problems:
            raise ValueError("; ".join(problems))
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> Experiment:
        if self.regions is not None:
            self._apply_regions(self.regions)
        dims = self.model.dims
        if len(self.data.patch_size) != dims:
            raise ValueError(
                f"data.patch_size has {len(self.data.patch_size)} entries but model.dims is {dims}"
            )
        if not self.inference.patch_size:
            inf = self.inference.model_copy(update={"patch_size": list(self.data.patch_size)})
            object.__setattr__(self, "inference", inf)
        elif len(self.inference.patch_size) != dims:
            raise ValueError(
                f"inference.patch_size has {len(self.inference.patch_size)} entries "
                f"but model.dims is {dims}"
            )
        if self.data.synthetic is not None and self.data.synthetic.dims != dims:
            raise ValueError(
                f"data.synthetic.dims is {self.data.synthetic.dims} but model.dims is {dims}"
            )
        if isinstance(self.data.spacing, list) and len(self.data.spacing) != dims:
            raise ValueError(
                f"data.spacing has {len(self.data.spacing)} entries but model.dims is {dims}"
            )
        if self.multilabel and self.loss.name in ("ce", "weighted_ce"):
            raise ValueError(
                f"loss.name '{self.loss.name}' is a softmax loss; with multilabel: true "
                "use bce, dice, dice_ce or focal"
            )
        if (
            self.loss.name == "weighted_ce"
            and isinstance(self.loss.weights, list)
            and len(self.loss.weights) != self.model.num_classes
        ):
            raise ValueError(
                f"loss.weights has {len(self.loss.weights)} entries but the model has "
                f"{self.model.num_classes} classes"
            )
        return self

    def _apply_regions(self, regions: dict[str, list[int]]) -> None:
        """``regions`` implies sigmoid outputs, one per region."""
        if "multilabel" in self.model_fields_set and not self.multilabel:
            raise ValueError(
                "regions: region outputs are sigmoid channels; remove multilabel: false "
                "(regions imply multilabel: true)"
            )
        object.__setattr__(self, "multilabel", True)
        model = self.model
        given = "classes" in model.model_fields_set or model.labels is not None
        if not given:
            update = {"classes": len(regions)}
            object.__setattr__(self, "model", model.model_copy(update=update))
        elif model.num_classes != len(regions):
            raise ValueError(
                f"regions: {len(regions)} regions ({', '.join(regions)}) need "
                f"{len(regions)} output channels but model.classes is {model.num_classes}; "
                f"set model.classes to {len(regions)} or leave it out"
            )

    @property
    def region_values(self) -> tuple[tuple[int, ...], ...] | None:
        """The output channels' label-value sets: ``regions``; plain multilabel ``((1,), (2,)..)``;
        None for softmax models."""
        from segcli.labels import as_regions, default_regions

        if self.regions is not None:
            return as_regions(self.regions)
        if self.multilabel:
            return default_regions(self.model.num_classes)
        return None

    @property
    def run_dir(self) -> str:
        return f"{self.output}/{self.name}"
