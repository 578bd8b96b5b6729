"""Empirical receptive field: which inputs the gradient of one output unit reaches.

    >>> from segcli.config.schema import CNNSpec
    >>> from segcli.models import build
    >>> from segcli.receptive_field.empirical import empirical_receptive_field
    >>> empirical_receptive_field(build(CNNSpec(layers=3)))
    (7, 7)

The measurement runs on a *probe*: a float64 copy of the network in which every convolution
(and transposed convolution) has constant positive weights and zero bias, max-pooling is
replaced by average pooling of the same geometry, and normalisation, activation and dropout
layers are identities.  The probe is linear with positive coefficients, so the gradient of an
output unit is non-zero at exactly the inputs that unit can depend on — no cancellation, no
dead ReLU, no max-pool routing the gradient to a single winner.  The field is the extent of that
support per axis, the largest over output positions across one period of the stride grids, on
an input large enough that the field never touches the border (the size is doubled until it
does not), one axis at a time — with that axis's own stride period and valid lengths, so
anisotropic networks (per-axis pooling and kernels) are measured like isotropic ones.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from segcli.models import layers
from segcli.models.base import SegmentationNetwork
from segcli.models.graph import Graph
from segcli.receptive_field.analytic import node_field

__all__ = ["empirical_receptive_field", "make_probe"]

_NEUTRAL = (
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.ReLU,
    nn.LeakyReLU,
    nn.GELU,
    nn.ELU,
    nn.PReLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.modules.dropout._DropoutNd,
)


def _replace(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, _NEUTRAL):
            setattr(module, name, nn.Identity())
        elif isinstance(child, (nn.MaxPool2d, nn.MaxPool3d)):
            dims = 2 if isinstance(child, nn.MaxPool2d) else 3
            k, s, d = (_axes(v, dims) for v in (child.kernel_size, child.stride, child.dilation))
            if any(_axes(child.padding, dims)) or child.ceil_mode:
                raise NotImplementedError("probe supports unpadded, floor-mode max-pooling only")
            setattr(module, name, layers.pool(dims, k, stride=s, dilation=d, kind="avg"))
        else:
            _replace(child)


def _axes(value: int | Sequence[int], dims: int) -> tuple[int, ...]:
    """A pooling parameter as one int per axis."""
    return (int(value),) * dims if isinstance(value, int) else tuple(int(v) for v in value)


def make_probe(model: nn.Module) -> nn.Module:
    """The float64, linear, positive-weight copy of ``model`` described in the module docstring."""
    probe = copy.deepcopy(model).to(dtype=torch.float64)
    _replace(probe)
    with torch.no_grad():
        for module in probe.modules():
            if isinstance(module, nn.modules.conv._ConvNd):
                fan = module.weight.numel() // module.weight.shape[0]
                module.weight.fill_(1.0 / fan)
                if module.bias is not None:
                    module.bias.zero_()
    probe.eval()
    for p in probe.parameters():
        p.requires_grad_(False)
    return probe


def _first_size(graph: Graph, at_least: int, axis: int) -> int:
    """The smallest length ``≥ at_least`` along ``axis`` that passes through the network."""
    for n in range(at_least, at_least + 4096):
        if graph.fits(n, axis):
            return n
    raise ValueError(f"no input length from {at_least} on passes along axis {axis}")


def empirical_receptive_field(
    model: SegmentationNetwork, start_size: int | None = None, *, max_size: int = 4096
) -> tuple[int, ...]:
    """Measure the receptive field of ``model``'s output units from input gradients.

    Every operation acts on each axis separately, so the probe's gradient is a sum of
    products of per-axis factors, and its extent along one axis does not depend on the size
    of the others.  Each axis is therefore measured on a slab: long along that axis, the
    smallest size the network accepts along the others (cheap even for 3D networks).

    Args:
        model: a network with ``field_graph()`` (for valid sizes and the stride period).
        start_size: first input length to try along the measured axis (default: a little more
            than the analytic field, so one measurement usually suffices); it is doubled (to
            the next size the network accepts) while the measured field touches the border.
        max_size: give up growing beyond this length and return the last measurement.

    Returns:
        Field extent per spatial axis (array axis order).
    """
    graph = model.field_graph()
    dims = graph.dims
    periods = [graph.period(graph.output, axis) for axis in range(dims)]
    probe = make_probe(model)
    thin = [_first_size(graph, 1, axis) for axis in range(dims)]
    starts = [start_size] * dims
    if start_size is None:
        # the analytic field only picks a first size; the loop below checks the border anyway
        first = [_first_size(graph, 4 * p + 8, axis) for axis, p in enumerate(periods)]
        sizes = graph.sizes(first)
        starts = [
            node_field(graph, graph.output, sizes, axis)[0] + 2 * periods[axis] + 4
            for axis in range(dims)
        ]
    extent = []
    # slabs are small: thread start-up would dominate (and crawls on a busy machine)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for axis in range(dims):
            n = _first_size(graph, starts[axis], axis)
            while True:
                size = tuple(n if a == axis else thin[a] for a in range(dims))
                field, touches = _measure(probe, graph, size, axis, periods[axis])
                if not touches or n >= max_size:
                    break
                n = _first_size(graph, 2 * n, axis)
            extent.append(field)
    finally:
        torch.set_num_threads(threads)
    return tuple(extent)


def _measure(
    probe: nn.Module, graph: Graph, size: tuple[int, ...], axis: int, period: int
) -> tuple[int, bool]:
    """Largest gradient-support extent along ``axis`` over ``period`` output positions."""
    out_size = graph.sizes(size)[graph.output.index]
    positions = min(period, out_size[axis])
    centre = [o // 2 for o in out_size]
    centre[axis] = (out_size[axis] - positions) // 2
    x = torch.ones((positions, graph.input.channels, *size), dtype=torch.float64)
    x.requires_grad_(True)
    y = probe(x)
    if isinstance(y, (list, tuple)):
        y = y[0]
    picks = []
    for t in range(positions):
        index = list(centre)
        index[axis] += t
        picks.append(y[(t, 0, *index)])
    torch.stack(picks).sum().backward()
    assert x.grad is not None
    support = x.grad.sum(dim=1) > 0  # (positions, *spatial)
    other = tuple(1 + a for a in range(len(size)) if a != axis)
    hits = support.any(dim=other) if other else support  # (positions, size[axis])
    field, touches = 0, False
    for t in range(positions):
        idx = torch.nonzero(hits[t]).flatten()
        if idx.numel() == 0:
            raise RuntimeError("no input received gradient; the probe is disconnected")
        lo, hi = int(idx.min()), int(idx.max())
        field = max(field, hi - lo + 1)
        touches = touches or lo == 0 or hi == size[axis] - 1
    return field, touches
