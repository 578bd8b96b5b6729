"""docs/spec.md is what ``make docs`` writes, every spec key has a meaning, and code reads it.

The last check is a static scan of segcli/ (:func:`spec_reads`): a key counts as read when some
code outside segcli/config/schema.py reads the attribute on a value known to be that key's spec
model — a parameter or variable annotated with a spec class (``spec: UNetSpec``,
``exp: Experiment``), a section reached from one (``exp.data.augment``), a variable assigned
from those, or the return value of a function annotated to return one (``load(...)``).  A
property of a spec model reads the fields its body reads.  Validators inside schema.py do not
count: a key only the validator looks at changes nothing.
"""

from __future__ import annotations

import ast
import difflib
import inspect
import textwrap
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from segcli.config import reference, schema
from segcli.config.reference import HOW_TO_DESCRIBE, SpecKey, spec_keys
from segcli.engine.reference import render

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "spec.md"
PACKAGE = ROOT / "segcli"

#: Files whose attribute reads do not count: the schema's validators (a key only a validator
#: looks at changes nothing) and the page generator (it documents keys, it does not use them).
NOT_USE = {"segcli/config/schema.py", "segcli/config/reference.py", "segcli/engine/reference.py"}

#: Keys read in a way the scan cannot follow, each with where.  Keep it short.
READ_ELSEWHERE: dict[str, str] = {
    "data.augment.preset": "schema.AugmentSpec._fill_preset fills in the transforms it names "
    "(AUGMENT_PRESETS), which build_augment reads",
}


# --------------------------------------------------------------------------- the page


def test_every_spec_key_has_a_meaning() -> None:
    missing = [f"{k.path} ({k.owner.__name__}.{k.name})" for k in spec_keys() if not k.meaning]
    assert not missing, (
        f"spec key(s) without a meaning: {', '.join(dict.fromkeys(missing))}; for each, "
        + HOW_TO_DESCRIBE
    )


def test_docs_spec_md_is_current() -> None:
    expected = render()
    actual = PAGE.read_text(encoding="utf-8") if PAGE.is_file() else ""
    if actual != expected:
        diff = difflib.unified_diff(
            actual.splitlines(), expected.splitlines(), "docs/spec.md", "make docs", lineterm=""
        )
        shown = "\n".join(list(diff)[:40])
        pytest.fail(f"docs/spec.md is stale: run make docs\n{shown}", pytrace=False)


def test_the_page_has_a_table_per_architecture_and_loss() -> None:
    text = render()
    for arch in schema.ARCH_NAMES:
        assert f"### model: {arch}\n" in text
    headings = [line.removeprefix("### loss: ") for line in text.splitlines()]
    tagged = {name for line in headings if "### " not in line for name in line.split(", ")}
    assert set(schema.LOSS_NAMES) <= tagged
    assert "| `train.amp` |" in text  # retired, still explained
    assert "`data.cache: true` | `data.cache: auto`" in text


# --------------------------------------------------------------------------- keys code reads


def test_every_spec_key_is_read_by_code() -> None:
    unread = unread_keys(spec_keys())
    schema_text = Path(schema.__file__).read_text(encoding="utf-8")
    assert not unread, (
        "spec key(s) that no code in segcli/ reads: "
        + ", ".join(
            f"{k.path} ({k.owner.__name__}.{k.name}"
            + (", only schema.py's validators mention it" if f'"{k.name}"' in schema_text else "")
            + ")"
            for k in unread
        )
        + ". A key must change what segcli does: read it where it matters (e.g. "
        "`exp.train.<key>`, or `spec.<key>` on a parameter annotated with its spec class), or "
        "remove it.  If code reads it in a way this scan cannot follow (a dynamic getattr, a "
        "model_dump() dict, a validator in schema.py that fills in other keys from it), add it "
        "to READ_ELSEWHERE in tests/config/test_spec_reference.py saying where."
    )


def test_the_allow_list_names_existing_keys() -> None:
    paths = {k.path for k in spec_keys()}
    assert set(READ_ELSEWHERE) <= paths, (
        f"READ_ELSEWHERE: no such key {set(READ_ELSEWHERE) - paths}"
    )


def test_a_key_nothing_reads_is_reported() -> None:
    """The scan is not vacuous: a key added without code that reads it fails the test above."""
    train = next(k for k in spec_keys() if k.path == "train.epochs")
    dummy = SpecKey("train.zz_unused", train.owner, "zz_unused", "int", "0", "dummy")
    assert unread_keys([train, dummy]) == [dummy]


def test_the_scan_follows_annotations_sections_and_assignments() -> None:
    source = textwrap.dedent(
        """
        def build(spec: UNetSpec, exp: Experiment | None = None):
            a = spec.depth
            aug = exp.data.augment
            b = aug.flip
            c = [s.lr for s in (exp.train,)]
            for block, flag in ((exp.data.synthetic, True), (exp.inference.postprocess, False)):
                h = block.noise, block.fill_holes
            for pair in [(exp.train, 1)]:
                i = pair[0].epochs
            d = exp.model.upsample
            e = load("x.yaml").seed
            f = getattr(exp.inference, "tta")
            g = unrelated.nesterov
        def load(path) -> Experiment: ...
        """
    )
    reads = spec_reads([source])
    for pair in [
        ("UNetSpec", "depth"),
        ("DataSpec", "augment"),
        ("AugmentSpec", "flip"),
        ("TrainSpec", "lr"),
        ("UNetSpec", "upsample"),
        ("Experiment", "seed"),
        ("InferenceSpec", "tta"),
        ("SyntheticSpec", "noise"),
        ("PostprocessSpec", "fill_holes"),
        ("TrainSpec", "epochs"),
    ]:
        assert pair in reads, pair
    assert ("TrainSpec", "nesterov") not in reads


def unread_keys(keys: Iterable[SpecKey]) -> list[SpecKey]:
    """Leaf keys (not sections) that no code in segcli/ reads."""
    sources = [
        path.read_text(encoding="utf-8")
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.relative_to(ROOT).as_posix() not in NOT_USE
    ]
    reads = spec_reads(sources)
    return [
        key
        for key in keys
        if not key.sections
        and key.path not in READ_ELSEWHERE
        and (key.owner.__name__, key.name) not in reads
    ]


# --------------------------------------------------------------------------- the scan

Env = dict[str, frozenset[str]]
_models = reference._models  # the spec sections an annotation names (one walk for both)


def _spec_models() -> dict[str, type[BaseModel]]:
    found: dict[str, type[BaseModel]] = {}

    def walk(model: type[BaseModel]) -> None:
        if model.__name__ not in found:
            found[model.__name__] = model
            for field in model.model_fields.values():
                for member in _models(field.annotation):
                    walk(member)

    walk(schema.Experiment)
    return found


MODELS = _spec_models()
#: names an annotation may use for spec models: the classes and the unions (ModelSpec, ...)
ALIASES: dict[str, frozenset[str]] = {name: frozenset({name}) for name in MODELS}
for _alias in ("ModelSpec", "LossSpec"):
    ALIASES[_alias] = frozenset(m.__name__ for m in _models(getattr(schema, _alias)))


def _field_models(model: str, attr: str) -> frozenset[str]:
    field = MODELS[model].model_fields.get(attr)
    return frozenset(m.__name__ for m in _models(field.annotation)) if field else frozenset()


def _annotation_models(node: ast.expr | None) -> frozenset[str]:
    """Spec models named anywhere in an annotation (``Experiment | None``, ``list[UNetSpec]``)."""
    if node is None:
        return frozenset()
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        try:
            node = ast.parse(node.value, mode="eval").body
        except SyntaxError:
            return frozenset()
    out: set[str] = set()
    for sub in ast.walk(node):
        name = sub.id if isinstance(sub, ast.Name) else getattr(sub, "attr", None)
        out |= ALIASES.get(name or "", frozenset())
    return frozenset(out)


class _Scan:
    """Attribute reads ``(model, attribute)`` on values whose spec model is known."""

    def __init__(self, returns: dict[str, frozenset[str]]) -> None:
        self.returns = returns  # function name → spec models it is annotated to return
        self.reads: set[tuple[str, str]] = set()

    def resolve(self, node: ast.expr, env: Env) -> frozenset[str]:
        if isinstance(node, ast.Name):
            return env.get(node.id, frozenset())
        if isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and f"{node.value.id}.{node.attr}" in env:
                return env[f"{node.value.id}.{node.attr}"]
            out: set[str] = set()
            for model in self.resolve(node.value, env):
                out |= _field_models(model, node.attr)
            return frozenset(out)
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr == "model_copy":
                return self.resolve(func.value, env)
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            return self.returns.get(name, frozenset())
        if isinstance(node, ast.IfExp):
            return self.resolve(node.body, env) | self.resolve(node.orelse, env)
        if isinstance(node, ast.BoolOp):
            return frozenset().union(*(self.resolve(v, env) for v in node.values))
        if isinstance(node, ast.NamedExpr):
            return self.resolve(node.value, env)
        if isinstance(node, ast.Subscript | ast.Starred):
            return self.resolve(node.value, env)
        if isinstance(node, ast.Tuple | ast.List):
            return frozenset().union(*(self.resolve(e, env) for e in node.elts))
        return frozenset()

    def bind(self, target: ast.expr, value: ast.expr | None, env: Env, models=None) -> None:
        found = models if models is not None else self.resolve(value, env) if value else None
        if isinstance(target, ast.Tuple | ast.List):
            values = value.elts if isinstance(value, ast.Tuple | ast.List) else None
            for i, element in enumerate(target.elts):
                if values is not None and len(values) == len(target.elts):
                    self.bind(element, values[i], env)
                else:
                    self.bind(element, None, env, found)
            return
        key = _target_key(target)
        if key and found:
            env[key] = env.get(key, frozenset()) | found

    def body(self, nodes: list[ast.stmt], env: Env) -> None:
        """A scope's statements: bindings to a fixed point, then reads, then nested scopes."""
        for _ in range(3):
            for node in nodes:
                for sub in _same_scope(node):
                    self._bindings(sub, env)
        for node in nodes:
            for sub in _same_scope(node):
                self._read(sub, env)
        for node in nodes:
            for scope in _nested_scopes(node):
                if isinstance(scope, ast.ClassDef):
                    self.klass(scope, env)
                else:
                    self.function(scope, env)

    def _bindings(self, node: ast.AST, env: Env) -> None:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                self.bind(target, node.value, env)
        elif isinstance(node, ast.AnnAssign):
            declared = _annotation_models(node.annotation)
            self.bind(node.target, node.value, env, declared or None)
        elif isinstance(node, ast.NamedExpr):
            self.bind(node.target, node.value, env)
        elif isinstance(node, ast.For | ast.comprehension):  # each item, not the iterable
            if isinstance(node.iter, ast.Tuple | ast.List):
                for item in node.iter.elts:
                    self.bind(node.target, item, env)
            else:
                self.bind(node.target, None, env, self.resolve(node.iter, env))
        elif isinstance(node, ast.withitem) and node.optional_vars is not None:
            self.bind(node.optional_vars, node.context_expr, env)

    def _read(self, node: ast.AST, env: Env) -> None:
        if isinstance(node, ast.Attribute):
            for model in self.resolve(node.value, env):
                self.reads.add((model, node.attr))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
        ):
            for model in self.resolve(node.args[0], env):
                self.reads.add((model, str(node.args[1].value)))

    def function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda, env: Env):
        inner = dict(env)
        for arg in _arguments(node.args):
            inner.pop(arg.arg, None)
            declared = _annotation_models(arg.annotation)
            if declared:
                inner[arg.arg] = declared
        body = node.body if isinstance(node.body, list) else [ast.Expr(node.body)]
        self.body(body, inner)

    def klass(self, node: ast.ClassDef, env: Env) -> None:
        """``self.x`` is known in every method where the class annotates ``x`` or a method
        assigns it a known value."""
        inner = dict(env)
        for stmt in node.body:
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                declared = _annotation_models(stmt.annotation)
                if declared:
                    inner[f"self.{stmt.target.id}"] = declared
        for method in (s for s in node.body if isinstance(s, ast.FunctionDef)):
            local = dict(inner)
            for arg in _arguments(method.args):
                declared = _annotation_models(arg.annotation)
                if declared:
                    local[arg.arg] = declared
            for sub in ast.walk(method):
                if isinstance(sub, ast.Assign):
                    for target in sub.targets:
                        if _target_key(target, self_only=True):
                            self.bind(target, sub.value, local)
            for key, value in local.items():
                if key.startswith("self."):
                    inner[key] = value
        self.body(node.body, inner)


def _target_key(target: ast.expr, self_only: bool = False) -> str | None:
    if isinstance(target, ast.Name) and not self_only:
        return target.id
    if (
        isinstance(target, ast.Attribute)
        and isinstance(target.value, ast.Name)
        and target.value.id == "self"
    ):
        return f"self.{target.attr}"
    return None


def _arguments(args: ast.arguments) -> list[ast.arg]:
    extra = [a for a in (args.vararg, args.kwarg) if a is not None]
    return [*args.posonlyargs, *args.args, *args.kwonlyargs, *extra]


_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)


def _same_scope(node: ast.AST) -> Iterator[ast.AST]:
    """``node`` and what it contains, without descending into functions and classes."""
    if isinstance(node, _SCOPES):
        return
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(c for c in ast.iter_child_nodes(current) if not isinstance(c, _SCOPES))


def _nested_scopes(node: ast.AST) -> Iterator[ast.AST]:
    """The functions and classes directly inside ``node`` (or ``node`` itself)."""
    if isinstance(node, _SCOPES):
        yield node
        return
    for child in ast.iter_child_nodes(node):
        yield from _nested_scopes(child)


def _returns(trees: list[ast.Module]) -> dict[str, frozenset[str]]:
    """Function name → the spec models it is annotated to return (any module)."""
    out: dict[str, frozenset[str]] = {}
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                declared = _annotation_models(node.returns)
                if declared:
                    out[node.name] = out.get(node.name, frozenset()) | declared
    return out


def _property_reads() -> dict[tuple[str, str], set[tuple[str, str]]]:
    """``(model, property)`` → what the property's body reads (``num_classes`` → classes)."""
    out: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for name, model in MODELS.items():
        for attr, value in inspect.getmembers(model):
            if isinstance(value, property) and value.fget is not None:
                if getattr(value.fget, "__module__", None) != schema.__name__:
                    continue
                tree = ast.parse(textwrap.dedent(inspect.getsource(value.fget)))
                scan = _Scan({})
                scan.body(tree.body[0].body, {"self": frozenset({name})})  # type: ignore[attr-defined]
                out[(name, attr)] = scan.reads
    return out


def spec_reads(sources: Iterable[str]) -> set[tuple[str, str]]:
    """Every ``(spec model, attribute)`` read in ``sources``, properties expanded."""
    trees = [ast.parse(source) for source in sources]
    scan = _Scan(_returns(trees))
    for tree in trees:
        scan.body(tree.body, {})
    reads = set(scan.reads)
    properties = _property_reads()
    todo = [pair for pair in reads if pair in properties]
    while todo:
        for pair in properties[todo.pop()]:
            if pair not in reads:
                reads.add(pair)
                if pair in properties:
                    todo.append(pair)
    return reads
