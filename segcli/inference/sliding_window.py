"""Sliding-window inference: overlapping patches, blended back into whole-image probabilities.

    >>> import torch
    >>> from segcli.inference import sliding_window
    >>> model = torch.nn.Conv3d(1, 3, 3, padding=1).eval()
    >>> probs = sliding_window(model, torch.randn(1, 80, 96, 70), patch_size=(64, 64, 64))
    >>> probs.shape, probs.sum(0).allclose(torch.ones(80, 96, 70))
    (torch.Size([3, 80, 96, 70]), True)

How (SPEC.md, "Inference"): the image is padded to at least the patch with the same rule
training uses (:func:`segcli.padding.pad_to_shape`); windows are placed by
:func:`~segcli.inference.windows.window_starts` and run ``batch_size`` at a time under
``torch.inference_mode()`` (autocast in ``precision``); each window's softmax (or sigmoid) is
multiplied by the blend weight and added in place into one preallocated ``(classes, *spatial)``
accumulator.  Because the windows form a Cartesian grid and the blend weight is a product of
per-axis profiles, the total weight at every voxel is the product of per-axis 1-D sums: the
final division needs no second full-size accumulator.  Peak memory is the accumulator plus one
batch of windows, whatever the number of windows.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from segcli.inference.windows import BLEND_MODES, blend_profiles, blend_weights, window_starts
from segcli.padding import PAD_MODES, pad_to_shape
from segcli.precision import inference_autocast

__all__ = ["accumulator_device", "mirror_axes", "sliding_window", "sliding_window_slabs"]

#: Share of the free CUDA memory the accumulators and the image may take; the rest is left
#: for the network's activations.
_DEVICE_MEMORY_SHARE = 0.5


def sliding_window(
    model: nn.Module,
    image: torch.Tensor | np.ndarray,
    patch_size: Sequence[int],
    overlap: float = 0.5,
    blend: str = "gaussian",
    batch_size: int = 8,
    tta: bool = False,
    multilabel: bool = False,
    device: str | torch.device | None = None,
    pad_mode: str = "minimum",
    pad_value: float = 0.0,
    channels_last: bool | None = None,
    precision: str | None = None,
) -> torch.Tensor:
    """Stitched class probabilities of ``model`` over ``image``, window by window.

    Args:
        model: any module mapping ``(B, C, *patch_size)`` to ``(B, classes, *patch_size)``
            logits, already on ``device`` and (normally) in eval mode.  A list or tuple output
            (deep supervision) is reduced to its first element.
        image: ``(C, *spatial)`` float tensor (numpy accepted), already normalised.  Any size:
            axes shorter than the patch are padded (centred, ``pad_mode``) and cropped back.
        patch_size: window size per spatial axis (array axis order).
        overlap: fraction of the patch that neighbouring windows share, in [0, 1).
        blend: ``gaussian`` (σ = patch/8 per axis, nnU-Net) or ``constant``.
        batch_size: windows per forward pass.
        tta: mirror test-time augmentation: average the probabilities over every combination
            of flipped spatial axes (2^dims forward passes per window).
        multilabel: sigmoid per channel instead of softmax over channels.
        device: where the windows run; default the model's (parameters') device.
        pad_mode: ``minimum`` (per-channel image minimum), ``edge``, ``reflect`` or
            ``constant`` — the rule training pads its crops with.
        pad_value: the constant for ``pad_mode="constant"``.
        channels_last: run the windows (and, for the duration of the call, the model's 4-D/5-D
            weights) in channels-last memory layout — the same arithmetic, in oneDNN's faster
            layout for 3-D convolutions on CPU (docs/benchmarks.md).  ``None`` (default): the
            measured rule of :func:`segcli.precision.memory_format` (3-D networks on CPU).  The weights' layout is restored before returning; values never change.
        precision: the network's precision, ``auto``, ``fp32``, ``bf16`` or ``fp16``
            (:func:`segcli.precision.resolve_precision` for ``device``; ``inference.precision``
            in a spec).  ``None`` (default): the ``auto`` rule on CUDA (bf16 on Ampere and
            newer, fp16 before), float32 elsewhere.  Only the forward passes run in it: the logits are cast to float32
            before the softmax, and the blend weights and the accumulator are float32.

    Returns:
        float32 ``(classes, *spatial)`` probabilities with ``spatial`` = the image's size
        (softmax: they sum to 1 over classes).  On ``device`` when the accumulator fits there
        (half the free memory on CUDA), else on CPU.

    Raises:
        ValueError: bad ``image`` rank, ``patch_size``, ``overlap``, ``blend``, ``batch_size``
            or ``pad_mode``; a model output that is not ``(B, classes, *patch_size)`` (e.g. a
            valid-padding network whose output is smaller than its input — not supported).
    """
    image = torch.as_tensor(image)
    out: torch.Tensor | None = None
    for start, stop, slab in sliding_window_slabs(
        model, image, patch_size, overlap, blend, batch_size, tta, multilabel, device,
        pad_mode, pad_value, channels_last, precision,
    ):  # fmt: skip
        if out is None:
            shape = (slab.shape[0], *image.shape[1:])
            store = accumulator_device(slab.device, (shape[0] + 1) * _numel(shape[1:]) * 4)
            out = torch.empty(shape, dtype=torch.float32, device=store)
        out[:, start:stop] = slab
    assert out is not None  # at least one window always exists
    return out


def sliding_window_slabs(
    model: nn.Module,
    image: torch.Tensor | np.ndarray,
    patch_size: Sequence[int],
    overlap: float = 0.5,
    blend: str = "gaussian",
    batch_size: int = 8,
    tta: bool = False,
    multilabel: bool = False,
    device: str | torch.device | None = None,
    pad_mode: str = "minimum",
    pad_value: float = 0.0,
    channels_last: bool | None = None,
    precision: str | None = None,
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """:func:`sliding_window`'s probabilities, slab by slab along the first spatial axis.

    Windows run row by row (all windows sharing a first-axis start), accumulating into a
    float32 band: a ring buffer one patch deep (deeper by the rows one batch of windows spans),
    allocated once; once no later window reaches some rows, they are taken out of the ring,
    divided by their weight sum and yielded.  The whole image's probabilities never exist at once: peak
    memory is the band (``classes × patch[0] × rest`` floats) plus one batch of windows, so a
    caller can decode, downcast or write each slab as it comes (``segcli predict`` on big CT).

    Yields:
        ``(start, stop, probabilities)``: rows ``start:stop`` of the first axis (image
        coordinates, increasing, covering the image once) and their float32
        ``(classes, stop - start, *spatial[1:])`` probabilities, on ``device`` when they fit
        (see :func:`accumulator_device`), else on CPU.  The tensor is a view into the band,
        valid until the next item is asked for: copy (or decode) it before.  Same arguments
        and errors as :func:`sliding_window`.
    """
    image = torch.as_tensor(image)
    patch = tuple(int(p) for p in patch_size)
    _check_arguments(image, patch, overlap, blend, batch_size, pad_mode)
    device = _model_device(model, image) if device is None else torch.device(device)
    image = image.to(dtype=torch.float32)

    padded, crop = pad_to_shape(image, patch, mode=pad_mode, value=pad_value)
    spatial = tuple(padded.shape[1:])
    starts = window_starts(spatial, patch, overlap)
    profiles = blend_profiles(patch, blend)
    weights = blend_weights(patch, blend).to(device)
    flips = mirror_axes(len(patch)) if tta else [()]
    amp = inference_autocast(device, precision)
    layout = _layout(len(patch), device, channels_last)
    sums = _weight_sums(starts, profiles, spatial)
    rest_sum = sums[1:]
    first, last = crop[1].start, crop[1].stop  # the image's rows inside the padded rows

    batches = list(_batches(itertools.product(*starts), batch_size))
    # the band is a ring of ``depth`` rows: row r of the image sums into ring row r mod depth;
    # one batch touches rows from its first window's start to its last window's end
    depth = max(batch[-1][0] - batch[0][0] for batch in batches) + patch[0]
    band: torch.Tensor | None = None
    band_start = starts[0][0]  # the first row not yet finished
    buffer: torch.Tensor | None = None  # one batch of windows, reused (created in ``layout``)

    def pieces(start: int, stop: int) -> list[tuple[int, int, int]]:
        """Rows start:stop as ``(ring_lo, ring_hi, offset)`` runs (two when they wrap)."""
        out, row = [], start
        while row < stop:
            pos = row % depth
            n = min(stop - row, depth - pos)
            out.append((pos, pos + n, row - start))
            row += n
        return out

    def finish(upto: int) -> Iterator[tuple[int, int, torch.Tensor]]:
        # rows band_start:upto are complete (no later window reaches them): divide them in
        # the ring, yield them (one piece, two where they wrap), then zero them for reuse
        nonlocal band_start
        assert band is not None
        for lo, hi, offset in pieces(band_start, upto):
            start = band_start + offset
            rows = band[:, lo:hi]
            total = _outer(sums[0][start : start + hi - lo], rest_sum).to(rows.device)
            rows.div_(total.unsqueeze(0))
            keep_lo, keep_hi = max(start, first), min(start + hi - lo, last)
            if keep_hi > keep_lo:
                inner = slice(keep_lo - start, keep_hi - start)
                yield keep_lo - first, keep_hi - first, rows[(slice(None), inner, *crop[2:])]
            rows.zero_()
        band_start = upto

    with _weights_in_layout(model, layout), torch.no_grad():
        for corners in batches:
            # windows come row by row (first-axis start non-decreasing): every row before this
            # batch's first is finished
            if band is not None and corners[0][0] > band_start:
                yield from finish(corners[0][0])
            regions = [
                (slice(None), *(slice(s, s + p) for s, p in zip(c, patch, strict=True)))
                for c in corners
            ]
            if buffer is None or buffer.device != padded.device:
                shape = (batch_size, padded.shape[0], *patch)
                buffer = torch.empty(shape, device=padded.device, memory_format=layout)
            for i, region in enumerate(regions):
                buffer[i].copy_(padded[region])
            batch = buffer[: len(regions)].to(device, non_blocking=True)
            probs = _predict(model, batch, flips, multilabel, amp)
            probs.mul_(weights)
            if band is None:
                # what moves there: the padded image and the band
                band_bytes = probs.shape[1] * depth * _numel(spatial[1:])
                store = accumulator_device(
                    device, (padded.shape[0] * _numel(spatial) + band_bytes) * 4
                )
                band = torch.zeros(
                    (probs.shape[1], depth, *spatial[1:]), dtype=torch.float32, device=store
                )
                padded = padded.to(store)
            probs = probs.to(band.device)
            for corner, window in zip(corners, probs, strict=True):
                plane = tuple(slice(s, s + p) for s, p in zip(corner[1:], patch[1:], strict=True))
                for lo, hi, off in pieces(corner[0], corner[0] + patch[0]):
                    band[(slice(None), slice(lo, hi), *plane)].add_(window[:, off : off + hi - lo])
        assert band is not None  # at least one window always exists
        yield from finish(spatial[0])


def mirror_axes(dims: int) -> list[tuple[int, ...]]:
    """Every combination of flipped spatial axes (as batch-tensor dims), identity first.

    ``mirror_axes(2)`` → ``[(), (2,), (3,), (2, 3)]``: 2^dims entries.
    """
    axes = range(2, 2 + dims)
    return [combo for k in range(dims + 1) for combo in itertools.combinations(axes, k)]


def accumulator_device(device: torch.device, nbytes: int) -> torch.device:
    """``device`` if ``nbytes`` fit into half its available memory (CUDA), else CPU.

    Available = what the driver reports free plus what PyTorch's caching allocator holds
    reserved but unused (the driver counts that as taken, yet PyTorch can hand it out).
    Non-CUDA devices are returned unchanged (their memory is the host's).
    """
    if device.type != "cuda":
        return device
    free, _total = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    available = free + max(cached, 0)
    return device if nbytes <= _DEVICE_MEMORY_SHARE * available else torch.device("cpu")


# --------------------------------------------------------------------------- internals


def _check_arguments(
    image: torch.Tensor,
    patch: tuple[int, ...],
    overlap: float,
    blend: str,
    batch_size: int,
    pad_mode: str,
) -> None:
    if image.ndim != len(patch) + 1:
        raise ValueError(
            f"image must be (C, *spatial) with {len(patch)} spatial axes to match "
            f"patch_size {patch}, got shape {tuple(image.shape)}"
        )
    if not patch or any(p <= 0 for p in patch):
        raise ValueError(f"patch_size must be positive integers, got {patch}")
    if any(n == 0 for n in image.shape):
        raise ValueError(f"image has an empty axis: shape {tuple(image.shape)}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if blend not in BLEND_MODES:
        raise ValueError(f"blend must be one of {', '.join(BLEND_MODES)}, got {blend!r}")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if pad_mode not in PAD_MODES:
        raise ValueError(f"pad_mode must be one of {', '.join(PAD_MODES)}, got {pad_mode!r}")


def _layout(dims: int, device: torch.device, channels_last: bool | None) -> torch.memory_format:
    if channels_last is None:  # the measured rule (bench/precision.py)
        from segcli.precision import memory_format

        return memory_format(dims, device)
    if not channels_last or dims not in (2, 3):
        return torch.contiguous_format
    return torch.channels_last if dims == 2 else torch.channels_last_3d


@contextmanager
def _weights_in_layout(model: nn.Module, layout: torch.memory_format) -> Iterator[None]:
    """Temporarily store the model's N-D weights in ``layout``; restore on exit (also on error).

    Swaps ``.data`` outside inference mode, so the parameters stay ordinary tensors that
    training can keep using; parameter identity (optimizer state) is untouched.
    """
    ndim = {torch.channels_last: 4, torch.channels_last_3d: 5}.get(layout)
    originals: list[tuple[torch.Tensor, torch.Tensor]] = []
    if ndim is not None:
        with torch.no_grad():
            for tensor in itertools.chain(model.parameters(), model.buffers()):
                if tensor.ndim != ndim:
                    continue
                # empty_like + copy gives true channels-last strides even where a size-1 axis
                # makes the current strides ambiguous (a 1-channel first layer, a 1×1 head);
                # .contiguous(memory_format=...) would keep those, and the convolution would
                # then fall back to the slow layout.
                converted = torch.empty_like(tensor.data, memory_format=layout)
                converted.copy_(tensor.data)
                if converted.stride() != tensor.stride():
                    originals.append((tensor, tensor.data))
                    tensor.data = converted
    try:
        yield
    finally:
        with torch.no_grad():
            for tensor, original in originals:
                tensor.data = original


def _model_device(model: nn.Module, image: torch.Tensor) -> torch.device:
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device
    return image.device


def _numel(shape: Sequence[int]) -> int:
    return int(np.prod(shape, dtype=np.int64))


def _batches(items: Iterator[tuple[int, ...]], size: int) -> Iterator[list[tuple[int, ...]]]:
    while chunk := list(itertools.islice(items, size)):
        yield chunk


def _forward(model: nn.Module, batch: torch.Tensor, amp: object) -> torch.Tensor:
    # Only the network runs in inference mode: what is computed from its output outside it is
    # an ordinary tensor, so the caller may modify the result in place.
    with torch.inference_mode(), amp:  # type: ignore[attr-defined]
        out = model(batch)
    if isinstance(out, list | tuple):
        out = out[0]
    if (
        not isinstance(out, torch.Tensor)
        or out.ndim != batch.ndim
        or out.shape[0] != batch.shape[0]
        or out.shape[2:] != batch.shape[2:]
    ):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"the model maps a window batch of shape {tuple(batch.shape)} to {got}; "
            "sliding_window needs (B, classes, *patch_size) logits of the same spatial size "
            "(networks whose output is smaller than their input, e.g. valid padding, "
            "are not supported)"
        )
    return out.float()


def _activate(logits: torch.Tensor, multilabel: bool) -> torch.Tensor:
    return torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=1)


def _predict(
    model: nn.Module,
    batch: torch.Tensor,
    flips: list[tuple[int, ...]],
    multilabel: bool,
    amp: object,
) -> torch.Tensor:
    """Probabilities of one window batch, averaged over the mirror flips (identity first)."""
    probs = _activate(_forward(model, batch, amp), multilabel)
    for axes in flips[1:]:
        flipped = _activate(_forward(model, batch.flip(axes), amp), multilabel)
        probs.add_(flipped.flip(axes))
    if len(flips) > 1:
        probs.div_(len(flips))
    return probs


def _weight_sums(
    starts: list[list[int]], profiles: Sequence[torch.Tensor], spatial: Sequence[int]
) -> list[torch.Tensor]:
    """Per axis, the sum over windows of the blend profile at each position (float64).

    The windows form a Cartesian grid and the weight is a product of per-axis profiles, so the
    total weight at a voxel is the product of these 1-D sums.
    """
    out = []
    for axis_starts, profile, size in zip(starts, profiles, spatial, strict=True):
        total = torch.zeros(int(size), dtype=torch.float64)
        for s in axis_starts:
            total[s : s + profile.numel()] += profile.double()
        out.append(total)
    return out


def _outer(first: torch.Tensor, rest: Sequence[torch.Tensor]) -> torch.Tensor:
    """float32 weight sums ``(len(first), *rest)`` as the outer product of 1-D sums."""
    total = first
    for axis_sum in rest:
        total = total.unsqueeze(-1) * axis_sum
    return total.to(torch.float32)
