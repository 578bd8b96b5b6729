"""Load an experiment spec: YAML (safe_load) → ``--set`` overrides → pydantic validation.

    >>> from segcli.config import load
    >>> exp = load("experiments/toy-dilated.yaml", overrides=["train.epochs=2"])
    >>> exp.model.dilations
    [1, 2, 4]

Every failure is one :class:`~segcli.errors.SpecError` whose message names the file, the
dotted key path, the value given and what is allowed ("did you mean ...?" for typos).
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from segcli.config.schema import Experiment
from segcli.errors import SpecError
from segcli.registry import did_you_mean

__all__ = ["apply_overrides", "dump", "from_dict", "load", "parse_override"]


def load(path: str | Path, overrides: Iterable[str] = ()) -> Experiment:
    """Read, override and validate the spec at ``path``.

    Raises:
        SpecError: the file is missing, not YAML, or the spec is invalid.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: spec file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot read the spec file ({exc})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise SpecError(
            f"{path}: not valid YAML: {exc.problem}{where}; a spec is plain YAML, read with "
            "safe_load, which never builds Python objects: remove the tag"
        ) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: the spec must be a YAML mapping, got {type(raw).__name__}")
    return from_dict(raw, source=str(path), overrides=overrides)


def from_dict(
    raw: Mapping[str, Any], source: str = "<spec>", overrides: Iterable[str] = ()
) -> Experiment:
    """Validate a spec given as a (nested) mapping; ``overrides`` as for :func:`load`."""
    raw = apply_overrides(_deepcopy(raw), overrides, source=source)
    try:
        return Experiment.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(_format_errors(exc, raw, source)) from None


def dump(exp: Experiment) -> str:
    """The resolved spec as YAML (every default spelled out); loads back to an equal spec."""
    return yaml.safe_dump(exp.model_dump(mode="json"), sort_keys=False, default_flow_style=None)


# --------------------------------------------------------------------------- overrides


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``"a.b.c=value"`` into ``(["a", "b", "c"], value)``; value parsed as YAML."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise SpecError(f"--set {text!r}: expected key.path=value, e.g. --set train.epochs=2")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as exc:
        raise SpecError(f"--set {text!r}: the value is not valid YAML ({exc})") from None
    return key.split("."), parsed


def apply_overrides(
    raw: dict[str, Any], overrides: Iterable[str], source: str = "<spec>"
) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides in place (and return ``raw``).

    Missing intermediate sections are created, so ``--set train.epochs=2`` works on a spec
    without a ``train`` section; unknown keys are caught by validation with a suggestion.
    """
    for text in overrides:
        parts, value = parse_override(text)
        node: Any = raw
        for i, part in enumerate(parts[:-1]):
            where = ".".join(parts[: i + 1])
            if isinstance(node, list):
                node = _list_item(node, part, where, text)
                continue
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict | list):
                raise SpecError(
                    f"{source}: --set {text}: '{where}' is a value ({child!r}), not a section"
                )
            node = child
        last = parts[-1]
        if isinstance(node, list):
            index = _index(last, ".".join(parts), text, len(node))
            node[index] = value
        else:
            node[last] = value
    return raw


def _index(part: str, where: str, text: str, length: int) -> int:
    if not part.lstrip("-").isdigit() or not -length <= int(part) < length:
        raise SpecError(f"--set {text}: '{where}' indexes a list of {length}; use 0..{length - 1}")
    return int(part)


def _list_item(node: list[Any], part: str, where: str, text: str) -> Any:
    return node[_index(part, where, text, len(node))]


def _deepcopy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _deepcopy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_deepcopy(v) for v in value]
    return value


# --------------------------------------------------------------------------- error messages


def _model_classes(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic model classes inside an annotation (unwrapping Optional/Union/Annotated)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _model_classes(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        out: list[type[BaseModel]] = []
        for arg in typing.get_args(annotation):
            out.extend(_model_classes(arg))
        return out
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return []


def _discriminator(annotation: Any, field_discriminator: Any) -> str | None:
    if isinstance(field_discriminator, str):
        return field_discriminator
    if typing.get_origin(annotation) is typing.Annotated:
        for meta in typing.get_args(annotation)[1:]:
            disc = getattr(meta, "discriminator", None)
            if isinstance(disc, str):
                return disc
    return None


def _walk(loc: tuple[Any, ...], raw: Any) -> tuple[list[str], type[BaseModel] | None, bool]:
    """Map a pydantic error location to the user's dotted path.

    Returns (path parts, the model class owning the last key, whether the last key is unknown).
    Discriminator tags that pydantic inserts into locations (``model.unet.filters``) are dropped.
    """
    cls: type[BaseModel] | None = Experiment
    node = raw
    path: list[str] = []
    skip_tag: str | None = None
    owner: type[BaseModel] | None = Experiment
    unknown = False
    for part in loc:
        if skip_tag is not None:
            skip_tag = None
            if isinstance(part, str) and not (cls and part in cls.model_fields):
                continue  # the discriminator tag pydantic inserted
        if isinstance(part, int):
            path.append(str(part))
            node = node[part] if isinstance(node, list) and 0 <= part < len(node) else None
            continue
        path.append(str(part))
        owner = cls
        field = cls.model_fields.get(part) if cls is not None else None
        if field is None:
            unknown = cls is not None and part != "__root__"
            cls = None
            node = node.get(part) if isinstance(node, dict) else None
            continue
        node = node.get(part) if isinstance(node, dict) else None
        members = _model_classes(field.annotation)
        disc = _discriminator(field.annotation, field.discriminator)
        if disc and len(members) > 1:
            tag = node.get(disc) if isinstance(node, dict) else None
            chosen = [m for m in members if _tag_of(m, disc) == tag]
            cls = chosen[0] if chosen else None
            skip_tag = disc
        elif members:
            cls = members[0]
        else:
            cls = None
    return path, owner, unknown


def _tag_of(model: type[BaseModel], disc: str) -> Any:
    field = model.model_fields.get(disc)
    if field is None:
        return None
    args = typing.get_args(field.annotation)
    return args[0] if args else field.default


def _format_errors(exc: ValidationError, raw: dict[str, Any], source: str) -> str:
    lines: list[str] = []
    for err in exc.errors(include_url=False):
        path, owner, _ = _walk(tuple(err["loc"]), raw)
        where = ".".join(path) or "(top level)"
        kind = err["type"]
        if kind == "extra_forbidden":
            allowed = [k for k in owner.model_fields] if owner is not None else []
            key = path[-1] if path else ""
            prefix = ".".join(path[:-1])
            close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            hint = f" (did you mean '{prefix + '.' if prefix else ''}{close[0]}'?)" if close else ""
            lines.append(f"{where}: unknown key{hint}; allowed here: {', '.join(allowed)}")
        elif kind in ("union_tag_invalid", "union_tag_not_found"):
            ctx = err.get("ctx", {})
            tags = str(ctx.get("expected_tags", "")).replace("'", "")
            disc = str(ctx.get("discriminator", "")).strip("'")
            given = ctx.get("tag")
            choices = [t.strip() for t in tags.split(",") if t.strip()]
            if kind == "union_tag_not_found":
                lines.append(f"{where}.{disc}: missing; choose one of: {', '.join(choices)}")
            else:
                lines.append(
                    f"{where}.{disc}: unknown value '{given}'; choose one of: "
                    f"{', '.join(choices)}{did_you_mean(str(given), choices)}"
                )
        elif kind == "missing":
            lines.append(f"{where}: required key is missing")
        elif kind == "value_error":
            msg = str(err["msg"]).removeprefix("Value error, ")
            lines.append(f"{where}: {msg}" if path else msg)
        else:
            given = err.get("input")
            shown = repr(given) if not isinstance(given, dict) else "a mapping"
            if len(shown) > 60:
                shown = shown[:57] + "..."
            lines.append(f"{where}: got {shown} ({type(given).__name__}); {_expected(err)}")
    head = f"{source}: invalid experiment spec"
    if len(lines) == 1:
        return f"{head}: {lines[0]}"
    return head + ":\n" + "\n".join(f"  - {line}" for line in lines)


def _expected(err: Any) -> str:
    msg = str(err["msg"])
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "literal_error":
        return f"expected one of {ctx.get('expected', '')}"
    return msg[0].lower() + msg[1:] if msg else kind
