"""Overlap-tile inference for valid-padding networks (Ronneberger et al. 2015, Fig. 2).

    >>> import torch
    >>> from segcli.config.schema import UNetSpec
    >>> from segcli.models import build
    >>> from segcli.inference.overlap_tile import overlap_tile
    >>> net = build(UNetSpec(filters=4, depth=2, padding="valid", norm="none")).eval()
    >>> overlap_tile(net, torch.randn(1, 37, 23), patch_size=(60, 60)).shape
    torch.Size([2, 37, 23])

A valid-padding network maps an input tile of ``P`` voxels to an output of ``P − 2b`` (``b``:
the *border*, 92 for the paper's U-Net on 572 → 388).  To predict a whole image:

1. **Output tiles tile the image exactly.**  The image is cut into output tiles of ``T``
   voxels per axis, ``T`` the largest multiple of the network's total stride ``S`` (``2**depth``
   for a U-Net) not above ``P − 2b``; each output voxel is predicted by exactly one tile, so
   nothing is blended.  The network's extra output voxels (``P − 2b − T``) are discarded.
2. **Input tiles are larger by the border.**  The tile predicting image voxels
   ``[t, t + T)`` reads input voxels ``[t − b, t − b + P)``.
3. **Mirror padding at the image edge.**  Where that window leaves the image the input is
   mirrored (``reflect``, repeated for borders longer than the image: a 30-voxel image under a
   92-voxel border is reflected back and forth), as in the paper.  ``inference.pad_mode``
   applies to sliding windows only.
4. **Tiles aligned to the total stride.**  Every tile start is ``≡ −b (mod S)`` in image
   coordinates, so every max-pooling groups the same voxels in every tile: the result does
   not depend on the tile size (up to float rounding) and equals the network run once on the
   whole mirror-padded image.  This holds for networks whose output at a voxel depends only on
   its receptive field (no instance norm, which normalises over the tile).

The geometry comes from the network's own description of itself (``field_graph()`` sizes and
strides, the receptive-field machinery) when it has one, else from probing the output size of
real forward passes.  :func:`predict_probabilities` is the entry point the engine calls: it
runs :func:`overlap_tile` for networks whose output is smaller than their input and
:func:`~segcli.inference.sliding_window.sliding_window` otherwise.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from segcli.inference.sliding_window import mirror_axes, sliding_window
from segcli.precision import inference_autocast

__all__ = [
    "TileGeometry",
    "mirror_indices",
    "mirror_pad",
    "overlap_tile",
    "predict_probabilities",
    "shrinks",
    "tile_geometry",
    "tile_starts",
]


@dataclass(frozen=True)
class TileGeometry:
    """How one network tiles an image (per spatial axis, array order).

    Attributes:
        input_tile: voxels the network reads per tile (a size it accepts).
        output_tile: voxels each tile contributes (a multiple of ``stride``).
        border_before: input voxels before the one the first output voxel stands for.
        network_output: the network's full output size for ``input_tile`` (≥ ``output_tile``).
        stride: the network's total downsampling (input voxels per deepest feature).
    """

    input_tile: tuple[int, ...]
    output_tile: tuple[int, ...]
    border_before: tuple[int, ...]
    network_output: tuple[int, ...]
    stride: tuple[int, ...]

    @property
    def border_after(self) -> tuple[int, ...]:
        """Input voxels after the one the last network-output voxel stands for."""
        return tuple(
            p - o - b
            for p, o, b in zip(
                self.input_tile, self.network_output, self.border_before, strict=True
            )
        )


# --------------------------------------------------------------------------- pure functions


def mirror_indices(length: int, before: int, after: int) -> np.ndarray:
    """Source indices of a mirror (``reflect``) padding of an axis, any pad length.

    Index ``i`` of the padded axis (``−before ≤ i − before < length + after``) reads voxel
    ``reflect(i − before)``: the axis is mirrored about its first and last voxel without
    repeating them (NumPy's ``reflect``), again and again when the padding is longer than the
    axis.  A length-1 axis is repeated.

    Args:
        length: voxels along the axis (≥ 1).
        before: voxels added in front (≥ 0).
        after: voxels added at the end (≥ 0).

    Returns:
        int64 array of ``before + length + after`` indices in ``[0, length)``.

    Raises:
        ValueError: ``length < 1`` or a negative padding.
    """
    if length < 1 or before < 0 or after < 0:
        raise ValueError(f"need length ≥ 1 and paddings ≥ 0, got {length}, {before}, {after}")
    positions = np.arange(-before, length + after, dtype=np.int64)
    if length == 1:
        return np.zeros_like(positions)
    period = 2 * (length - 1)
    folded = np.mod(positions, period)
    return np.where(folded < length, folded, period - folded)


def mirror_pad(image: torch.Tensor, before: Sequence[int], after: Sequence[int]) -> torch.Tensor:
    """Mirror-pad the trailing ``len(before)`` axes of ``image`` (see :func:`mirror_indices`).

    ``(..., *spatial)`` → ``(..., *(spatial + before + after))``, same dtype and device.
    """
    dims = len(before)
    out = image
    for axis, (b, a) in enumerate(zip(before, after, strict=True)):
        dim = image.ndim - dims + axis
        if b == 0 and a == 0:
            continue
        index = torch.from_numpy(mirror_indices(out.shape[dim], int(b), int(a)))
        out = out.index_select(dim, index.to(out.device))
    return out


def tile_starts(length: int, tile: int) -> list[int]:
    """Output-tile starts along an axis of ``length`` voxels: ``0, T, 2T, …`` until covered.

    ``ceil(length / tile)`` tiles; the last one may reach past the image (that part is
    computed on mirrored input and cropped away).
    """
    if length < 1 or tile < 1:
        raise ValueError(f"need length ≥ 1 and tile ≥ 1, got {length} and {tile}")
    return list(range(0, length, tile))


# --------------------------------------------------------------------------- geometry


def _graph_of(model: nn.Module) -> object | None:
    describe = getattr(model, "field_graph", None)
    if describe is None:
        return None
    try:
        return describe()
    except NotImplementedError:
        return None


def _size_probe(model: nn.Module, dims: int) -> Callable[[tuple[int, ...]], tuple[int, ...] | None]:
    """``input size → output size`` (``None`` where the network rejects the size)."""
    graph = _graph_of(model)
    if graph is not None:

        def from_graph(size: tuple[int, ...]) -> tuple[int, ...] | None:
            try:
                return tuple(graph.sizes(size)[graph.output.index])  # type: ignore[attr-defined]
            except ValueError:  # SizeError is a ValueError
                return None

        return from_graph

    device, channels = _model_device(model), _first_channels(model)

    def by_forward(size: tuple[int, ...]) -> tuple[int, ...] | None:
        probe = torch.zeros((1, channels, *size), device=device)
        try:
            with torch.inference_mode():
                out = model(probe)
        except RuntimeError:
            return None
        out = out[0] if isinstance(out, list | tuple) else out
        return tuple(int(s) for s in out.shape[2:])

    return by_forward


def _graph_stride(model: nn.Module, dims: int) -> tuple[int, ...] | None:
    """Total stride per axis from the network's layer graph (``None`` without one)."""
    graph = _graph_of(model)
    if graph is None:
        return None
    total = getattr(graph, "total_stride", None)
    if total is not None:
        return tuple(int(s) for s in total())
    strides = [1] * dims
    for node in graph.nodes:  # type: ignore[attr-defined]
        scales = getattr(node, "scales", None) or (node.scale,) * dims
        strides = [math.lcm(s, math.ceil(x)) for s, x in zip(strides, scales, strict=True)]
    return tuple(strides)


def shrinks(model: nn.Module, patch_size: Sequence[int]) -> bool:
    """Whether ``model`` maps a ``patch_size`` input to a smaller output (valid padding).

    Raises:
        ValueError: the network cannot process ``patch_size`` at all.
    """
    patch = tuple(int(p) for p in patch_size)
    out = _size_probe(model, len(patch))(patch)
    if out is None:
        raise ValueError(f"the network cannot process an input of size {list(patch)}")
    return out != patch


def tile_geometry(model: nn.Module, patch_size: Sequence[int]) -> TileGeometry:
    """The overlap-tile geometry of ``model`` for input tiles of ``patch_size``.

    Args:
        model: a network whose output is the input minus a border (valid padding).
        patch_size: the input tile (``inference.patch_size``), a size the network accepts.

    Returns:
        The :class:`TileGeometry`; ``output_tile`` is the largest multiple of the stride not
        above the network's output.

    Raises:
        ValueError: the network rejects ``patch_size``, its output is larger than the input or
            not one prediction per input voxel (a strided classifier such as ``patch_cnn`` in
            ``window`` mode), or the output is smaller than one stride.
    """
    patch = tuple(int(p) for p in patch_size)
    dims = len(patch)
    probe = _size_probe(model, dims)
    out = probe(patch)
    if out is None or len(out) != dims:
        raise ValueError(f"the network cannot process an input tile of size {list(patch)}")
    # total downsampling per axis: from model.field_graph() (its cumulative scales), else 1
    step = tuple(int(s) for s in (_graph_stride(model, dims) or (1,) * dims))
    for axis in range(dims):
        if out[axis] > patch[axis]:
            raise ValueError(
                f"the network's output ({list(out)}) is larger than its input ({list(patch)})"
            )
        bigger = list(patch)
        bigger[axis] += step[axis]
        grown = probe(tuple(bigger))
        if grown is not None and grown[axis] - out[axis] != step[axis]:
            raise ValueError(
                f"the network does not give one prediction per input voxel (an input "
                f"{step[axis]} voxels longer gives {grown[axis] - out[axis]} more outputs on "
                f"axis {axis}); overlap-tile needs a dense output (e.g. model.mode: dense)"
            )
    tiles = tuple((o // s) * s for o, s in zip(out, step, strict=True))
    if any(t == 0 for t in tiles):
        raise ValueError(
            f"inference.patch_size {list(patch)} gives an output of {list(out)} voxels, less "
            f"than the network's total stride {list(step)}; use a larger patch size"
        )
    border = tuple((p - o) // 2 for p, o in zip(patch, out, strict=True))  # centre, as training
    return TileGeometry(patch, tiles, border, out, step)


def _shrink_for(geometry: TileGeometry, shape: Sequence[int], probe: Callable) -> TileGeometry:
    """Smaller input tiles where the image is smaller than one output tile (same alignment)."""
    patch, tiles, out = (
        list(geometry.input_tile),
        list(geometry.output_tile),
        list(geometry.network_output),
    )
    for axis, (n, s) in enumerate(zip(shape, geometry.stride, strict=True)):
        need = -(-n // s) * s
        cut = tiles[axis] - need
        if cut <= 0:
            continue
        trial = list(patch)
        trial[axis] -= cut
        got = probe(tuple(trial))
        if got is None or got[axis] < need:
            continue
        # the border must stay the same, or the alignment would change
        if (trial[axis] - got[axis]) // 2 != geometry.border_before[axis]:
            continue
        patch, tiles, out = trial, tiles[:axis] + [need] + tiles[axis + 1 :], list(got)
    return TileGeometry(
        tuple(patch), tuple(tiles), geometry.border_before, tuple(out), geometry.stride
    )


# --------------------------------------------------------------------------- inference


def overlap_tile(
    model: nn.Module,
    image: torch.Tensor | np.ndarray,
    patch_size: Sequence[int],
    *,
    batch_size: int = 1,
    tta: bool = False,
    multilabel: bool = False,
    device: str | torch.device | None = None,
    precision: str | None = None,
) -> torch.Tensor:
    """Class probabilities of a valid-padding ``model`` over a whole ``image`` of any size.

    Args:
        model: maps ``(B, C, *patch_size)`` to ``(B, classes, *(patch_size − border))`` logits;
            already on ``device``, normally in eval mode.  A list output (deep supervision)
            is reduced to its first element.
        image: ``(C, *spatial)`` float tensor (numpy accepted), already normalised; any size
            (odd sizes, smaller than a tile: all fine).
        patch_size: the input tile per spatial axis; the network must accept it.
        batch_size: tiles per forward pass.
        tta: average over mirrored tiles (2^dims passes; axes with an odd total border are
            not flipped, their flipped output would be off by one voxel).
        multilabel: sigmoid per channel instead of softmax.
        device: where the tiles run; default the model's device.
        precision: the network's precision (``auto``, ``fp32``, ``bf16``, ``fp16``;
            :mod:`segcli.precision`); None: autocast's default on CUDA, float32 elsewhere.
            The logits are cast to float32 before the softmax either way.

    Returns:
        float32 ``(classes, *spatial)`` probabilities on the CPU, ``spatial`` = the image's.

    Raises:
        ValueError: bad ``image`` rank or ``batch_size``, or a network/patch size that cannot
            tile (see :func:`tile_geometry`).
    """
    image = torch.as_tensor(image).to(torch.float32)
    patch = tuple(int(p) for p in patch_size)
    if image.ndim != len(patch) + 1:
        raise ValueError(
            f"image must be (C, *spatial) with {len(patch)} spatial axes to match "
            f"patch_size {patch}, got shape {tuple(image.shape)}"
        )
    if any(n == 0 for n in image.shape):
        raise ValueError(f"image has an empty axis: shape {tuple(image.shape)}")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    device = _model_device(model) if device is None else torch.device(device)
    spatial = tuple(int(n) for n in image.shape[1:])
    probe = _size_probe(model, len(patch))
    geo = _shrink_for(tile_geometry(model, patch), spatial, probe)

    starts = [tile_starts(n, t) for n, t in zip(spatial, geo.output_tile, strict=True)]
    covered = [s[-1] + t for s, t in zip(starts, geo.output_tile, strict=True)]
    before = geo.border_before
    # the last input tile ends at start + P − b (image coordinates)
    after = [
        c - t - b + p - n
        for c, t, b, p, n in zip(
            covered, geo.output_tile, before, geo.input_tile, spatial, strict=True
        )
    ]
    padded = mirror_pad(image, before, after)
    flips = _symmetric_flips(geo) if tta else [()]
    amp = inference_autocast(device, precision)

    acc: torch.Tensor | None = None
    for corners in _batches(itertools.product(*starts), batch_size):
        batch = torch.stack(
            [
                padded[
                    (slice(None), *(slice(c, c + p) for c, p in zip(corner, patch, strict=True)))
                ]
                for corner in corners
            ]
        ).to(device)
        probs = _tile_probabilities(model, batch, flips, multilabel, amp, geo)
        if acc is None:
            acc = torch.zeros((probs.shape[1], *covered), dtype=torch.float32)
        for corner, tile in zip(corners, probs.cpu(), strict=True):
            region = tuple(slice(c, c + t) for c, t in zip(corner, geo.output_tile, strict=True))
            acc[(slice(None), *region)] = tile
    assert acc is not None  # at least one tile always exists
    return acc[(slice(None), *(slice(0, n) for n in spatial))].clone()


def predict_probabilities(
    model: nn.Module,
    image: torch.Tensor | np.ndarray,
    patch_size: Sequence[int],
    *,
    overlap: float = 0.5,
    blend: str = "gaussian",
    batch_size: int = 8,
    tta: bool = False,
    multilabel: bool = False,
    device: str | torch.device | None = None,
    pad_mode: str = "minimum",
    pad_value: float = 0.0,
    precision: str | None = None,
) -> torch.Tensor:
    """Whole-image probabilities: overlap-tile for shrinking networks, else sliding windows.

    The arguments are those of :func:`~segcli.inference.sliding_window.sliding_window`;
    ``overlap``, ``blend``, ``pad_mode`` and ``pad_value`` do not apply to overlap-tile (its
    tiles do not overlap in the output and it mirrors at the edge).

    Returns:
        float32 ``(classes, *spatial)`` probabilities (see the two functions).
    """
    if shrinks(model, patch_size):
        return overlap_tile(
            model,
            image,
            patch_size,
            batch_size=batch_size,
            tta=tta,
            multilabel=multilabel,
            device=device,
            precision=precision,
        )
    return sliding_window(
        model,
        image,
        patch_size,
        overlap=overlap,
        blend=blend,
        batch_size=batch_size,
        tta=tta,
        multilabel=multilabel,
        device=device,
        pad_mode=pad_mode,
        pad_value=pad_value,
        precision=precision,
    )


# --------------------------------------------------------------------------- internals


def _model_device(model: nn.Module) -> torch.device:
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _first_channels(model: nn.Module) -> int:
    channels = getattr(model, "in_channels", None)
    if isinstance(channels, int):
        return channels
    for module in model.modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            return int(module.in_channels)
    return 1


def _batches(items: Iterator[tuple[int, ...]], size: int) -> Iterator[list[tuple[int, ...]]]:
    while chunk := list(itertools.islice(items, size)):
        yield chunk


def _symmetric_flips(geo: TileGeometry) -> list[tuple[int, ...]]:
    ok = {
        2 + axis
        for axis, (b, a) in enumerate(zip(geo.border_before, geo.border_after, strict=True))
        if a == b
    }
    return [f for f in mirror_axes(len(geo.input_tile)) if set(f) <= ok]


def _tile_probabilities(
    model: nn.Module,
    batch: torch.Tensor,
    flips: list[tuple[int, ...]],
    multilabel: bool,
    amp: object,
    geo: TileGeometry,
) -> torch.Tensor:
    """``(B, classes, *output_tile)`` probabilities of one batch of input tiles."""
    total: torch.Tensor | None = None
    for axes in flips:
        x = batch.flip(axes) if axes else batch
        with torch.inference_mode(), amp:  # type: ignore[attr-defined]
            out = model(x)
        out = out[0] if isinstance(out, list | tuple) else out
        if tuple(out.shape[2:]) != geo.network_output:
            raise ValueError(
                f"the network maps a tile of {list(batch.shape[2:])} to {list(out.shape[2:])}, "
                f"not the expected {list(geo.network_output)}"
            )
        out = out.float()
        probs = torch.sigmoid(out) if multilabel else torch.softmax(out, dim=1)
        probs = probs.flip(axes) if axes else probs
        total = probs if total is None else total + probs
    assert total is not None
    if len(flips) > 1:
        total = total / len(flips)
    keep = (slice(None), slice(None), *(slice(0, t) for t in geo.output_tile))
    return total[keep]
