"""The spec half of docs/spec.md: every key of the experiment spec, read from the schema.

    >>> from segcli.config.reference import spec_keys, spec_markdown
    >>> [(k.path, k.type_text, k.default_text) for k in spec_keys()][1]
    ('seed', 'int', '0')
    >>> lines = spec_markdown()        # the tables, as segcli.engine.reference puts them on the page

:func:`spec_sections` walks :class:`~segcli.config.schema.Experiment`: one table per model, the
discriminated unions as one table per ``model.arch`` and ``loss.name``.  Types and defaults come
from the pydantic fields (``int > 0``, ``float in [0, 1)``, ``auto | memory | disk``), meanings
from the docstring under each field (``use_attribute_docstrings``); a key without one is a
:class:`MissingMeaning` that names it.  Retired keys (``exclude=True``) and the old values that
validators still accept (:data:`LEGACY_SPELLINGS`, validated here to show what they become)
get a table of their own.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from segcli.config.loader import from_dict
from segcli.config.schema import Experiment

__all__ = [
    "HOW_TO_DESCRIBE",
    "LEGACY_SPELLINGS",
    "MissingMeaning",
    "Section",
    "SpecKey",
    "anchor",
    "one_line",
    "spec_keys",
    "spec_markdown",
    "spec_sections",
    "table_cell",
    "value_text",
]

HOW_TO_DESCRIBE = (
    "write its meaning as a one-line docstring directly under the field in "
    'segcli/config/schema.py (e.g. `epochs: int = 20` then `"""number of epochs"""`), then run '
    "make docs"
)

#: Old spellings that specs written by earlier versions still use: (key, old value, the key
#: whose resolved value shows what it now means).  The page validates each one and prints what
#: it became, so a changed validator changes the page.
LEGACY_SPELLINGS: tuple[tuple[str, Any, str], ...] = (
    ("data.cache", True, "data.cache"),
    ("data.cache", False, "data.cache"),
    ("train.amp", True, "train.precision"),
    ("train.amp", False, "train.precision"),
    ("train.amp_dtype", "bf16", "train.precision"),
    ("train.amp_dtype", "fp16", "train.precision"),
)


class MissingMeaning(ValueError):
    """A spec key, file or file key has no meaning to print (the message names each one)."""


# --------------------------------------------------------------------------- spec keys


@dataclass(frozen=True)
class SpecKey:
    """One key of the spec as the page prints it.

    Attributes:
        path: dotted key path (``data.augment.flip``).
        owner: the spec model that declares it; ``name`` its field name there.
        type_text, default_text: readable type (``int > 0``) and default (``required``).
        meaning: the field's docstring, whitespace collapsed (None: undocumented).
        sections: ``(name, anchor)`` of the tables below it, for keys that hold a section (one
            per ``model.arch`` / ``loss.name`` value for a union).
        retired: an old key that is still read but never written (``exclude=True``).
    """

    path: str
    owner: type[BaseModel]
    name: str
    type_text: str
    default_text: str
    meaning: str | None
    sections: tuple[tuple[str, str], ...] = ()
    retired: bool = False


@dataclass(frozen=True)
class Section:
    """One table: the keys of one spec model at one path (``model: unet``)."""

    title: str
    path: str
    model: type[BaseModel]
    keys: tuple[SpecKey, ...]

    @property
    def anchor(self) -> str:
        return anchor(self.title)


def spec_sections() -> list[Section]:
    """Every table of the page, top level first, then depth first in field order."""
    out: list[Section] = []
    _walk(Experiment, "", "top level", None, out)
    return out


def spec_keys() -> list[SpecKey]:
    """Every key of every table (sections and retired keys included), in page order."""
    return [key for section in spec_sections() for key in section.keys]


def _walk(
    model: type[BaseModel], path: str, title: str, tag: str | None, out: list[Section]
) -> None:
    keys: list[SpecKey] = []
    index = len(out)
    out.append(Section(title, path, model, ()))  # placeholder: parents come before children
    for name, field in model.model_fields.items():
        key_path = f"{path}.{name}" if path else name
        members = _models(field.annotation)
        children: list[tuple[str, str]] = []
        if members:
            disc = _discriminator(field)
            for member in members:
                value = _tag(member, disc) if disc else None
                child = f"{key_path}: {value}" if value else key_path
                children.append((value or key_path, anchor(child)))
                _walk(member, key_path, child, disc, out)
        keys.append(
            SpecKey(
                path=key_path,
                owner=model,
                name=name,
                type_text=_type_text(field.annotation, field.metadata),
                default_text=_default_text(field, name == tag),
                meaning=one_line(field.description),
                sections=tuple(children),
                retired=field.exclude is True,
            )
        )
    keys.sort(key=lambda k: k.name != tag)  # the discriminator first: it picks the table
    out[index] = Section(title, path, model, tuple(keys))


def _models(annotation: Any) -> list[type[BaseModel]]:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _models(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _models(arg)]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return []


def _discriminator(field: FieldInfo) -> str | None:
    return field.discriminator if isinstance(field.discriminator, str) else None


def _tag(model: type[BaseModel], disc: str) -> str:
    values = typing.get_args(model.model_fields[disc].annotation)
    return ", ".join(str(v) for v in values)


# --------------------------------------------------------------------------- types, defaults


def _type_text(annotation: Any, metadata: list[Any] | tuple[Any, ...] = ()) -> str:
    """``int > 0``, ``float in [0, 1)``, ``list[int > 0]``, ``auto | memory | disk``, ``null``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        inner = list(metadata)
        for meta in args[1:]:
            inner.extend(meta.metadata if isinstance(meta, FieldInfo) else [meta])
        return _type_text(args[0], inner)
    if origin in (typing.Union, types.UnionType):
        parts = [_type_text(arg, metadata) for arg in args]
        return " | ".join(dict.fromkeys(parts))
    if origin is typing.Literal:
        return " | ".join(value_text(v) for v in args)
    if annotation is type(None):
        return "null"
    if origin is list:
        return f"list[{_type_text(args[0])}]"
    if origin is tuple:
        return "[" + ", ".join(_type_text(a) for a in args if a is not Ellipsis) + "]"
    if origin is dict:
        return f"map {_type_text(args[0])} → {_type_text(args[1])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    if annotation in (int, float):
        return _bounded(annotation.__name__, metadata)
    return getattr(annotation, "__name__", str(annotation))


def _bounded(name: str, metadata: list[Any] | tuple[Any, ...]) -> str:
    low = high = None
    for meta in metadata:
        if isinstance(meta, annotated_types.Gt):
            low = ("(", "> ", meta.gt)
        elif isinstance(meta, annotated_types.Ge):
            low = ("[", "≥ ", meta.ge)
        elif isinstance(meta, annotated_types.Lt):
            high = (")", "< ", meta.lt)
        elif isinstance(meta, annotated_types.Le):
            high = ("]", "≤ ", meta.le)
    if low and high:
        return f"{name} in {low[0]}{value_text(low[2])}, {value_text(high[2])}{high[0]}"
    bound = low or high
    return f"{name} {bound[1]}{value_text(bound[2])}" if bound else name


def _default_text(field: FieldInfo, is_tag: bool) -> str:
    if is_tag or field.is_required():
        return "required"
    if field.default_factory is not None:
        return value_text(field.default_factory())  # type: ignore[call-arg]
    return value_text(field.default)


def value_text(value: Any) -> str:
    """A value as YAML flow text: ``null``, ``true``, ``[32, 32]``, ``{name: dice_ce}``."""
    if isinstance(value, BaseModel):
        return value_text(value.model_dump(mode="json", exclude_defaults=True))
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value else '""'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(value_text(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{value_text(k)}: {value_text(v)}" for k, v in value.items()) + "}"
    return repr(value)


def one_line(text: str | None, period: bool = False) -> str | None:
    """One line of markdown from an RST-flavoured docstring (a final period kept or not)."""
    if not text or not text.strip():
        return None
    text = re.sub(r"``([^`]+)``", r"`\1`", " ".join(text.split()))
    text = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text)
    return text if period else text.removesuffix(".")


def anchor(title: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    slug = re.sub(r"[^\w\- ]", "", title.lower())
    return slug.replace(" ", "-")


def table_cell(text: str) -> str:
    return text.replace("|", "\\|")


# --------------------------------------------------------------------------- spec tables


def _check_meanings(sections: list[Section]) -> None:
    missing = [k.path for s in sections for k in s.keys if k.meaning is None]
    if missing:
        raise MissingMeaning(
            f"spec key(s) without a meaning: {', '.join(dict.fromkeys(missing))}; for each, "
            + HOW_TO_DESCRIBE
        )


def _spec_part(sections: list[Section]) -> list[str]:
    lines = ["## Spec keys", ""]
    for section in sections:
        lines += [f"### {section.title}", ""]
        doc = one_line((section.model.__dict__.get("__doc__") or "").split("\n\n")[0], True)
        if doc:
            lines += [doc, ""]
        lines += ["| key | type | default | meaning |", "|---|---|---|---|"]
        for key in section.keys:
            if key.retired:
                continue
            if key.sections:
                links = " \\| ".join(f"[{name}](#{target})" for name, target in key.sections)
                kind = table_cell(key.type_text).replace("section", f"section: {links}", 1)
                if len(key.sections) > 1:
                    kind = f"section by `{_discriminator_name(key)}`: {links}"
                cells = [f"`{key.path}`", kind]
            else:
                cells = [f"`{key.path}`", f"`{table_cell(key.type_text)}`"]
            cells += [f"`{table_cell(key.default_text)}`", table_cell(key.meaning or "")]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _discriminator_name(key: SpecKey) -> str:
    field = key.owner.model_fields[key.name]
    return _discriminator(field) or ""


def _legacy_part(sections: list[Section]) -> list[str]:
    lines = [
        "## Retired keys and values",
        "",
        "Specs written for earlier versions still load: these keys and values are still read, "
        "and mean what the right-hand column says; `config.yaml` never writes them back.",
        "",
        "| key | type | meaning |",
        "|---|---|---|",
    ]
    for key in (k for s in sections for k in s.keys if k.retired):
        lines.append(
            f"| `{key.path}` | `{table_cell(key.type_text)}` | {table_cell(key.meaning or '')} |"
        )
    lines += ["", "| old spelling | now read as |", "|---|---|"]
    for path, old, shown in LEGACY_SPELLINGS:
        raw: dict[str, Any] = {"data": {"synthetic": {}}, "model": {"arch": "cnn"}}
        section, name = path.split(".")
        raw.setdefault(section, {})[name] = old
        resolved: Any = from_dict(raw, source="docs")
        for part in shown.split("."):
            resolved = getattr(resolved, part)
        lines.append(f"| `{path}: {value_text(old)}` | `{shown}: {value_text(resolved)}` |")
    return [*lines, ""]


def spec_markdown(sections: list[Section] | None = None) -> list[str]:
    """The page's spec part: one table per section, then the retired keys and values.

    Raises:
        MissingMeaning: a key has no docstring (naming each and how to add one).
    """
    sections = spec_sections() if sections is None else sections
    _check_meanings(sections)
    return _spec_part(sections) + _legacy_part(sections)
