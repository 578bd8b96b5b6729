"""Render a :class:`~segcli.plan.planner.Plan`: YAML with a comment per decision, table, JSON.

    >>> text = render_yaml(plan)            # an ordinary spec, comments above the keys
    >>> write_spec(plan, "exp.yaml")         # validated with segcli.config, written atomically

The YAML is validated through :func:`segcli.config.from_dict` before anything is written, and
published by renaming a temp file: a failed plan never leaves a partial spec.
"""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path
from typing import Any

import yaml

from segcli.plan.decision import Check, Decision
from segcli.plan.planner import Plan

__all__ = ["render_json", "render_yaml", "write_spec"]

_WIDTH = 98


def _flow(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6, sort_keys=False)
    return text.removesuffix("\n...\n").strip()


def _comment(text: str, indent: int) -> list[str]:
    pad = " " * indent
    return [
        pad + "# " + line
        for line in textwrap.wrap(text, width=_WIDTH - indent - 2, break_on_hyphens=False)
    ]


def _check_line(check: Check) -> str:
    return f"[{check.level}] {check.name}: {check.message}"


def render_yaml(plan: Plan) -> str:
    """The spec as YAML: header and checks on top, each decision's rule above its first key."""
    by_key: dict[str, list[Decision]] = {}
    loose: list[Decision] = []
    paths = set(_paths(plan.spec))
    for d in plan.decisions:
        key = next((k for k in d.keys if k in paths), None)
        if key is None:
            loose.append(d)
        else:
            by_key.setdefault(key, []).append(d)
    lines: list[str] = []
    for h in plan.header:
        lines += _comment(h, 0)
    lines += _comment("segcli train this file as it is; every key can be changed.", 0)
    for d in loose:
        lines += _comment(f"{d.name}: {d.value} — {d.rule}", 0)
    if plan.checks:
        lines.append("# checks:")
        for c in plan.checks:
            lines += _comment(_check_line(c), 2)
    for key, value in plan.spec.items():
        lines += _emit(key, value, key, by_key, 0)
    return "\n".join(lines) + "\n"


def _paths(spec: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k, v in spec.items():
        path = f"{prefix}{k}"
        out.append(path)
        if isinstance(v, dict) and path in ("data", "model", "train", "inference", "evaluation"):
            out += _paths(v, path + ".")
    return out


def _emit(
    key: str, value: Any, path: str, by_key: dict[str, list[Decision]], indent: int
) -> list[str]:
    lines: list[str] = []
    for d in by_key.get(path, []):
        lines += _comment(f"{d.name}: {d.value} — {d.rule}", indent)
    pad = " " * indent
    if isinstance(value, dict) and path in ("data", "model", "train", "inference", "evaluation"):
        lines.append(f"{pad}{key}:")
        for k, v in value.items():
            lines += _emit(k, v, f"{path}.{k}", by_key, indent + 2)
    else:
        lines.append(f"{pad}{key}: {_flow(value)}")
    return lines


def write_spec(plan: Plan, path: str | Path) -> str:
    """Validate the rendered YAML as a segcli spec and write it atomically; returns the text.

    Raises:
        SpecError: the planned spec does not validate (a planner bug; nothing is written).
    """
    from segcli.atomic import atomic_open
    from segcli.config import from_dict

    text = render_yaml(plan)
    raw = yaml.safe_load(text)
    if raw != plan.spec:  # the comments and flow styles must not change a value
        raise ValueError("rendered YAML does not round-trip to the planned spec")
    from_dict(raw, source=str(path))
    with atomic_open(path, "w", what="the spec") as handle:
        handle.write(text)
    return text


def render_json(
    plan: Plan, spec_path: str | None = None, fingerprint_path: str | None = None
) -> str:
    """The plan for scripts: spec, decisions, checks, budget (and the files written)."""
    out = plan.to_dict()
    out["files"] = {"spec": spec_path, "fingerprint": fingerprint_path}
    return json.dumps(_finite(out), indent=1, default=str, allow_nan=False)


def _finite(value: Any) -> Any:
    """NaN and infinities → None (JSON has no NaN), recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
