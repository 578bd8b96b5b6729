"""A study file: which variants of an experiment to compare, on how many folds.

    >>> from segcli.study.design import load_study
    >>> study = load_study("loss.yaml", overrides=["train.epochs=2"])
    >>> [(v.name, v.exp.loss.name) for v in study.variants]

Two ways to name variants::

    # a base spec and the keys to vary (every combination when several keys are given)
    base: experiments/toy-unet.yaml
    vary: {loss.name: [ce, dice, dice_ce]}
    folds: 5

    # or whole specs
    variants: {cnn: experiments/toy-cnn.yaml, dilated: experiments/toy-dilated.yaml}
    folds: 5
    metric: dice        # what the ranking and best.yaml are decided on (default dice)

Paths are relative to the study file.  Every variant is one ordinary spec with ``data.folds``
set to ``folds``, ``output`` set to the study's ``runs`` folder and ``name`` set to its variant
(the ``--set`` overrides are applied to every variant first).  The variants must share the
dataset (``data.root``) and the labels (``model.classes``/``labels``, ``multilabel``,
``regions``): otherwise their cases or their scores could not be paired.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from segcli.config import Experiment
from segcli.errors import SpecError

__all__ = ["Study", "StudyFile", "Variant", "load_study"]


class StudyFile(BaseModel):
    """The study YAML, validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base: str | None = None
    vary: dict[str, list[Any]] | None = None
    variants: dict[str, str] | None = None
    folds: int = Field(5, ge=2)
    metric: str = "dice"

    @model_validator(mode="after")
    def _one_way(self) -> StudyFile:
        if (self.variants is None) == (self.vary is None):
            raise ValueError("give either variants: {name: spec.yaml} or base: + vary: {key: [..]}")
        if self.vary is not None:
            if self.base is None:
                raise ValueError("vary: needs base: (the spec whose keys are varied)")
            if not self.vary:
                raise ValueError("vary: name at least one key")
            for key, values in self.vary.items():
                if len(values) < 1:
                    raise ValueError(f"vary.{key}: give at least one value")
        elif self.base is not None:
            raise ValueError("base: goes with vary:; with variants: each names its own spec")
        if self.variants is not None and len(self.variants) < 2:
            raise ValueError("variants: a study compares at least two")
        return self


@dataclass(frozen=True)
class Variant:
    """One arm of the study: its display name, its run-folder name, its spec."""

    name: str
    slug: str
    exp: Experiment


@dataclass(frozen=True)
class Study:
    path: Path
    folds: int
    metric: str
    variants: list[Variant]


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice (two variants with the same name)."""


def _no_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise SpecError(
                f"'{key}' is given twice (line {key_node.start_mark.line + 1}); variant names "
                "and keys must be unique"
            )
        seen.add(key)
    return loader.construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _no_duplicates,  # type: ignore[arg-type]
)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "variant"


def _value_text(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def load_study(path: str | Path, overrides: Iterable[str] = ()) -> Study:
    """Read and check a study file; build every variant's spec.

    Raises:
        SpecError: unreadable or invalid file, a variant spec that does not load, two variants
            with the same name, or variants that differ in dataset or labels — naming the key,
            file or variant.
    """
    from segcli.config import from_dict, load

    path = Path(path)
    overrides = list(overrides)
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506
    except FileNotFoundError:
        raise SpecError(f"{path}: study file not found") from None
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from None
    except (OSError, yaml.YAMLError) as exc:
        raise SpecError(f"{path}: cannot read the study ({exc})") from None
    try:
        study = StudyFile.model_validate(raw or {})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'study'}: {e['msg']}" for e in exc.errors()
        )
        raise SpecError(f"{path}: invalid study: {problems}") from None
    from segcli.metrics import METRICS

    if study.metric not in METRICS:
        raise SpecError(f"{path}: metric '{study.metric}' is not a metric; choose one of "
                        f"{', '.join(sorted(METRICS))}")  # fmt: skip
    here = path.parent
    arms: list[tuple[str, Experiment]] = []
    if study.variants is not None:
        for name, spec in study.variants.items():
            arms.append((str(name), load(here / spec, overrides)))
    else:
        assert study.base is not None and study.vary is not None
        base_path = here / study.base
        load(base_path, overrides)  # the base itself must load (its own errors, its own name)
        raw_base = yaml.safe_load(base_path.read_text(encoding="utf-8")) or {}
        keys = list(study.vary)
        for combo in itertools.product(*(study.vary[k] for k in keys)):
            name = ",".join(f"{k}={_value_text(v)}" for k, v in zip(keys, combo, strict=True))
            sets = [f"{k}={_value_text(v)}" for k, v in zip(keys, combo, strict=True)]
            # the varied keys go onto the base as written (not its resolved form, whose
            # defaults of one architecture would not fit another)
            arms.append((name, from_dict(raw_base, f"{path} ({name})", [*overrides, *sets])))
    names = [n for n, _ in arms]
    slugs = [_slug(n) for n in names]
    for seen in (names, slugs):
        twice = sorted({n for n in seen if seen.count(n) > 1})
        if twice:
            raise SpecError(f"{path}: two variants are named '{twice[0]}'; give each its own name")
    _check_same(path, arms)
    runs = path.parent / "runs"  # replaced by the study's output folder in the engine
    variants = [
        Variant(name, slug, _arm(exp, slug, study.folds, runs))
        for (name, exp), slug in zip(arms, slugs, strict=True)
    ]
    return Study(path, study.folds, study.metric, variants)


def _arm(exp: Experiment, slug: str, folds: int, runs: Path) -> Experiment:
    from segcli.config import from_dict

    raw = exp.model_dump(mode="json")
    raw["name"] = slug
    raw["output"] = str(runs)
    raw["data"]["folds"] = folds
    raw["data"]["fold"] = None
    return from_dict(raw, source=f"variant {slug}")


def _labels(exp: Experiment) -> Any:
    return (exp.model.num_classes, exp.model.labels, exp.multilabel, exp.regions)


def _check_same(path: Path, arms: list[tuple[str, Experiment]]) -> None:
    first_name, first = arms[0]
    for name, exp in arms[1:]:
        root = (Path(first.data.root).resolve() if first.data.root else None, first.data.synthetic)
        other = (Path(exp.data.root).resolve() if exp.data.root else None, exp.data.synthetic)
        if root != other:
            raise SpecError(
                f"{path}: variants '{first_name}' and '{name}' differ in data.root "
                f"({first.data.root} vs {exp.data.root}); a study pairs the same cases"
            )
        if _labels(first) != _labels(exp):
            raise SpecError(
                f"{path}: variants '{first_name}' and '{name}' differ in their labels "
                "(model.classes / model.labels / multilabel / regions); their scores could not "
                "be paired"
            )


def with_output(study: Study, runs: Path) -> Study:
    """The study with every variant's ``output`` set to ``runs``."""
    from segcli.config import from_dict

    variants = []
    for v in study.variants:
        raw = v.exp.model_dump(mode="json")
        raw["output"] = str(runs)
        variants.append(Variant(v.name, v.slug, from_dict(raw, source=f"variant {v.slug}")))
    return Study(study.path, study.folds, study.metric, variants)
