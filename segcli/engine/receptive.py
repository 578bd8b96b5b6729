"""``segcli receptive-field``: per-layer sizes, jumps, receptive fields and parameters.

    >>> from segcli.config import load
    >>> from segcli.engine.receptive import receptive_field_report
    >>> report = receptive_field_report(load("experiments/toy-dilated.yaml"))
    >>> report["receptive_field"], report["parameters"]
    ([15, 15], 1266)

The analytic table comes from the network's layer graph (built on the meta device, so even
the 31-million-parameter U-Net costs nothing); ``--empirical`` measures the field from input
gradients on a probe copy (see :mod:`segcli.receptive_field.empirical`) — for networks above a
million parameters on a copy with one feature map per width unit, which has the same
connectivity and hence the same field at a fraction of the cost.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from segcli.config.schema import Experiment
from segcli.errors import SpecError

__all__ = ["default_input_size", "receptive_field_command", "receptive_field_report"]

_THIN_ABOVE = 1_000_000


def default_input_size(exp: Experiment) -> list[int]:
    """``data.patch_size``; for ``patch_cnn`` in ``window`` mode, its window (``input_size``)."""
    spec = exp.model
    if spec.arch == "patch_cnn" and spec.mode == "window":
        return [spec.input_size] * spec.dims
    return list(exp.data.patch_size)


def _thin(spec: Any) -> Any:
    update = {"filters": 1}
    for key in ("hidden", "fc_filters", "max_filters"):
        if key in type(spec).model_fields and getattr(spec, key, None) is not None:
            update[key] = 1
    return spec.model_copy(update=update)


def receptive_field_report(
    exp: Experiment, input_size: Sequence[int] | None = None, empirical: bool = False
) -> dict[str, Any]:
    """The JSON payload of ``segcli receptive-field`` (SPEC.md): totals and per-layer rows.

    Args:
        exp: the experiment; only ``model`` (and ``data.patch_size`` as default size) is used.
        input_size: spatial input size for the per-layer sizes (default
            :func:`default_input_size`).
        empirical: also measure the field (key ``empirical_receptive_field``).

    Returns:
        ``{"receptive_field", "parameters", "layers", "input_size", "output_size", "jump"[,
        "empirical_receptive_field"]}``.

    Raises:
        SpecError: wrong number of sizes, or a size the network cannot process (with the
            nearest sizes that work).
    """
    import torch

    from segcli.models import build, count_parameters, output_size
    from segcli.receptive_field.analytic import analyse

    spec = exp.model
    key = "--input-size" if input_size else "data.patch_size"
    size = list(input_size) if input_size else default_input_size(exp)
    if len(size) != spec.dims:
        raise SpecError(
            f"{key} has {len(size)} value(s) {size} but model.dims is {spec.dims}; "
            f"give one size per axis"
        )
    output_size(spec, size, key=key)  # clear error for incompatible sizes
    with torch.device("meta"):
        model = build(spec)
    report = analyse(model.field_graph(), size)
    payload = report.to_dict()
    payload["arch"] = spec.arch
    payload["parameters"] = count_parameters(model)
    if empirical:
        from segcli.receptive_field.empirical import empirical_receptive_field

        probe_spec = _thin(spec) if payload["parameters"] > _THIN_ABOVE else spec
        payload["empirical_receptive_field"] = list(empirical_receptive_field(build(probe_spec)))
    return payload


def _fmt(values: Sequence[Any]) -> str:
    return "×".join(str(v) for v in values)


def receptive_field_command(
    exp: Experiment, input_size: list[int] | None, empirical: bool, as_json: bool
) -> None:
    """Print the per-layer table and totals (or JSON with ``as_json``) to the console."""
    from rich.table import Table

    from segcli.engine.runtime import console

    payload = receptive_field_report(exp, input_size, empirical)
    if as_json:
        console.out(json.dumps(payload), highlight=False)
        return
    from rich import box

    table = Table(
        title=f"{exp.name}: {exp.model.arch} ({exp.model.dims}D), input "
        f"{_fmt(payload['input_size'])}",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    # the lecture's table for the Ciresan network speaks of "maps and neurons"
    lecture_style = exp.model.arch == "patch_cnn"
    columns = [("#", "right"), ("layer", "left"), ("type", "left")]
    if lecture_style:
        columns.append(("maps and neurons", "left"))
    else:
        columns += [("channels", "right"), ("output size", "right")]
    columns += [("kernel", "right"), ("jump", "right"), ("RF", "right"), ("params", "right")]
    for column, justify in columns:
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for i, row in enumerate(payload["layers"]):
        kernel = row["kernel"]
        cells = [str(i), row["name"], row["type"]]
        if lecture_style:
            cells.append(row["maps_and_neurons"])
        else:
            cells += [str(row["channels"]), _fmt(row["output_size"])]
        cells += [
            _fmt(kernel if isinstance(kernel, list) else [kernel] * exp.model.dims)
            if kernel
            else "",
            _fmt(row["jump"]),
            _fmt(row["receptive_field"]),
            f"{row['parameters']:,}" if row["parameters"] else "",
        ]
        table.add_row(*cells)
    console.print(table)
    console.print(
        f"receptive field [bold]{_fmt(payload['receptive_field'])}[/] (analytic)"
        + (
            f", [bold]{_fmt(payload['empirical_receptive_field'])}[/] (empirical)"
            if "empirical_receptive_field" in payload
            else ""
        )
        + f"; output {_fmt(payload['output_size'])} for input {_fmt(payload['input_size'])}"
        + f" (jump {_fmt(payload['jump'])}); parameters [bold]{payload['parameters']:,}[/]"
    )
