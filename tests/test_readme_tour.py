"""The README tour and ``bench/readme.py`` (``make readme``) describe the same steps."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _readme_script():
    sys.path.insert(0, str(REPO / "bench"))
    try:
        spec = importlib.util.spec_from_file_location("bench_readme", REPO / "bench" / "readme.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["bench_readme"] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(REPO / "bench"))
    return module


def test_every_marked_block_has_a_step_and_every_step_a_block() -> None:
    script = _readme_script()
    text = (REPO / "README.md").read_text()
    opened = re.findall(r"<!-- tour:([\w-]+) -->", text)
    closed = re.findall(r"<!-- /tour:([\w-]+) -->", text)
    assert opened == closed and len(set(opened)) == len(opened)
    steps = [s.name for s in script.STEPS]
    generated = {"generated", "evaluate-reading"}  # written by the script, not commands
    assert [n for n in opened if n not in generated] == steps  # same names, same order
    for step in script.STEPS:  # each block shows exactly its step's commands
        block = text.split(f"<!-- tour:{step.name} -->")[1].split(f"<!-- /tour:{step.name} -->")[0]
        shown = [line[2:] for line in block.splitlines() if line.startswith("$ ")]
        assert shown == [c.splitlines()[0] for c in step.commands], step.name


def test_replace_block_rewrites_only_its_block() -> None:
    script = _readme_script()
    text = "a\n<!-- tour:x -->\nold\n<!-- /tour:x -->\nb\n<!-- tour:y -->\nkeep\n<!-- /tour:y -->\n"
    out = script.replace_block(text, "x", "new")
    assert out == text.replace("old", "new")
