"""bench/_harness.py: the machinery every benchmark script shares (tables, document sections,
the machine line, child processes and their memory, temporary folders)."""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"


@pytest.fixture(scope="module")
def harness():
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("_harness")
    finally:
        sys.path.remove(str(BENCH))


def _script(tmp_path: Path, code: str) -> Path:
    path = tmp_path / "child.py"
    path.write_text(textwrap.dedent(code))
    return path


# --------------------------------------------------------------------------- tables


def test_table_header_separator_alignment_and_rows(harness) -> None:
    lines = harness.table(["a", "bb", "c"], [(1, "x", 2.5), ("", "y", "z")], align="lr")
    assert lines == [
        "| a | bb | c |",
        "|---|---:|---|",  # the letters past align's end are l
        "| 1 | x | 2.5 |",
        "|  | y | z |",
    ]
    assert harness.row("name", 3) == "| name | 3 |"
    assert harness.table(["only"]) == ["| only |", "|---|"]


# --------------------------------------------------------------------------- documents


def test_write_section_replaces_its_own_block_and_keeps_the_rest(harness, tmp_path) -> None:
    doc = tmp_path / "docs" / "bench.md"
    harness.write_section("one", "first\n\n", doc)  # a new file; body's trailing blank dropped
    harness.write_section("two", "second", doc)
    assert doc.read_text() == (  # (a new file starts with the blank lines before a block)
        "\n\n<!-- bench:one -->\nfirst\n<!-- /bench:one -->\n\n"
        "<!-- bench:two -->\nsecond\n<!-- /bench:two -->\n"
    )
    doc.write_text("# Title\n\nprose" + doc.read_text() + "\ntail\n")
    harness.write_section("one", "again", doc)
    text = doc.read_text()
    assert text.startswith("# Title\n\nprose\n\n<!-- bench:one -->\nagain\n<!-- /bench:one -->")
    assert "second" in text and text.endswith("\ntail\n") and "first" not in text
    assert not list(doc.parent.glob("*.tmp"))  # written through a temporary file, renamed
    assert harness.marked_sections(doc) == (
        "<!-- bench:one -->\nagain\n<!-- /bench:one -->\n\n"
        "<!-- bench:two -->\nsecond\n<!-- /bench:two -->"
    )
    assert harness.marked_sections(tmp_path / "missing.md") == ""


def test_the_benchmarks_document_starts_with_its_header(harness, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(harness, "DOC", tmp_path / "benchmarks.md")
    harness.write_section("x", "body", harness.DOC)
    assert (
        harness.DOC.read_text() == harness.HEADER + "\n<!-- bench:x -->\nbody\n<!-- /bench:x -->\n"
    )


def test_blocks_between_markers(harness) -> None:
    text = "a\n<!-- s -->\nold\n<!-- /s -->\nb\n<!-- s -->\nsecond\n<!-- /s -->\n"
    assert harness.block_body(text, "<!-- s -->", "<!-- /s -->") == "old"
    assert harness.block_body("<!-- s -->\n<!-- /s -->", "<!-- s -->", "<!-- /s -->") == ""
    assert harness.block_body("nothing", "<!-- s -->", "<!-- /s -->") is None
    new = harness.replace_block(text, "<!-- s -->", "<!-- /s -->", "new $1 \\1")
    assert new == text.replace("old", "new $1 \\1", 1)  # the first block only, body verbatim
    assert harness.replace_block("x\n\n\n", "<s>", "</s>", "b") == "x\n\n<s>\nb\n</s>\n"


def test_doc_options_and_publish(harness, tmp_path, capsys) -> None:
    parser = argparse.ArgumentParser()
    harness.doc_options(parser, tmp_path / "default.md")
    args = parser.parse_args(["--no-write"])
    harness.publish(args, "s", "body")
    assert capsys.readouterr().out == "body\n" and not (tmp_path / "default.md").exists()
    args = parser.parse_args(["--doc", str(tmp_path / "other.md")])
    harness.publish(args, "s", "body")
    assert "<!-- bench:s -->\nbody\n<!-- /bench:s -->" in (tmp_path / "other.md").read_text()


def test_report_module_still_exports_what_scripts_import(harness) -> None:
    sys.path.insert(0, str(BENCH))
    try:
        report = importlib.import_module("_report")
    finally:
        sys.path.remove(str(BENCH))
    assert report.machine is harness.machine and report.write_section is harness.write_section
    assert report.write_block is harness.write_block and report.DOC == harness.DOC


# --------------------------------------------------------------------------- the machine


def test_machine_line_names_the_cpu_model_and_its_flags(harness, monkeypatch) -> None:
    info = {"model name": "Example CPU 9000", "flags": "fpu sse2 avx2 avx512f amx_tile avx512_bf16"}
    monkeypatch.setattr(harness, "_cpuinfo", info.get)
    assert harness.cpu_model() == "Example CPU 9000"
    assert harness.cpu_flags() == "avx2 avx512f amx_tile avx512_bf16"  # /proc/cpuinfo's order
    line = harness.machine()
    assert (
        f"{os.cpu_count()} cores (Example CPU 9000; flags avx2 avx512f amx_tile avx512_bf16)"
        in line
    )
    assert "torch" in line and "Python" in line
    info["flags"] = "fpu sse2"
    assert harness.cpu_flags().startswith("none of avx2, avx512f")


def test_machine_line_on_this_machine(harness) -> None:
    line = harness.machine()
    assert harness.cpu_model() in line and f"flags {harness.cpu_flags()}" in line


# --------------------------------------------------------------------------- timing here


def test_interleaved_times_the_calls_in_turn_after_warmup(harness) -> None:
    calls: list[str] = []
    best = harness.interleaved(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3, 1
    )
    assert calls == ["a", "b", "a", "b", "a", "b", "a", "b"]
    assert set(best) == {"a", "b"} and all(v >= 0 for v in best.values())
    seconds, out = harness.best_of(lambda: 7, 2)
    assert out == 7 and seconds >= 0


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux /proc")
def test_peak_growth_of_this_process(harness) -> None:
    np = pytest.importorskip("numpy")
    try:
        with harness.peak_growth() as peak:
            block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
            del block
    except OSError:
        pytest.skip("/proc/self/clear_refs not writable here")
    assert 56 <= peak.mib <= 200
    assert set(harness.proc_status_mib("VmRSS", "VmHWM")) == {"VmRSS", "VmHWM"}


# --------------------------------------------------------------------------- other processes


def test_run_times_captures_and_logs(harness, tmp_path) -> None:
    script = _script(
        tmp_path, 'import sys; print("noise"); print(\'{"x": 1}\'); print("err", file=sys.stderr)'
    )
    done = harness.run([sys.executable, script], log=tmp_path / "logs" / "child.log", echo=False)
    assert done.returncode == 0 and done.seconds > 0 and done.cpu_seconds >= 0
    assert done.json() == {"x": 1} and done.stderr == "err\n"
    assert (tmp_path / "logs" / "child.log").read_text() == 'noise\n{"x": 1}\nerr\n'
    assert harness.child_json(script) == {"x": 1}


def test_run_failure_says_which_command_and_shows_its_output(harness, tmp_path) -> None:
    script = _script(tmp_path, 'import sys; print("the reason", file=sys.stderr); sys.exit(3)')
    with pytest.raises(harness.CommandFailed, match=r"(?s)failed \(3\).*child.py.*the reason"):
        harness.run([sys.executable, script], echo=False)
    assert harness.run([sys.executable, script], check=False, echo=False).returncode == 3
    with pytest.raises(harness.CommandFailed, match="ran past"):
        harness.run([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5, echo=False)


def test_run_polls_the_peak_memory_of_the_whole_process_tree(harness, tmp_path) -> None:
    pytest.importorskip("psutil")
    # the child starts a grandchild; each holds 100 MiB of touched memory at the same time
    grandchild = _script(tmp_path, "import time; b = bytearray(100 * 2**20); time.sleep(1.5)")
    parent = tmp_path / "parent.py"
    parent.write_text(
        "import subprocess, sys, time\n"
        f"p = subprocess.Popen([sys.executable, {str(grandchild)!r}])\n"
        "b = bytearray(100 * 2**20); p.wait()\n"
    )
    done = harness.run([sys.executable, parent], poll=0.05, echo=False)
    mib = 2**20
    assert done.procs == 2
    assert 200 * mib <= done.rss <= 400 * mib  # both processes' 100 MiB and their interpreters
    assert 190 * mib <= done.pss <= done.rss
    assert done.figures() == {"seconds": done.seconds, "rss": done.rss, "pss": done.pss, "procs": 2}
    quick = harness.run([sys.executable, "-c", "pass"], poll=0.05, echo=False)
    assert quick.returncode == 0  # a command faster than one poll still finishes cleanly


def test_scratch_is_removed_even_on_errors_unless_kept(harness, tmp_path) -> None:
    with pytest.raises(RuntimeError), harness.scratch("t-", parent=tmp_path) as folder:
        (folder / "f").write_text("x")
        raise RuntimeError
    assert not folder.exists()
    with harness.scratch("t-", parent=tmp_path, keep=True) as kept:
        pass
    assert kept.is_dir()


def test_link_cases(harness, tmp_path) -> None:
    root = tmp_path / "data"
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True)
        for name in ("a", "b"):
            (root / sub / f"{name}.nii.gz").write_text(sub + name)
    images, labels = tmp_path / "val" / "images", tmp_path / "val" / "labels"
    images.mkdir(parents=True)
    (images / "stale.nii.gz").write_text("x")
    harness.link_cases(root, ["b"], images, labels)
    assert [p.name for p in images.iterdir()] == ["b.nii.gz"]  # a new folder
    assert (labels / "b.nii.gz").read_text() == "labelsTrb" and (labels / "b.nii.gz").is_symlink()


def test_worktree_checks_out_another_commit_and_goes_away(harness, tmp_path) -> None:
    head = harness.git("rev-parse", "HEAD")
    with harness.worktree("HEAD", tmp_path / "tree") as tree:
        assert (tree / "bench").is_dir()
        assert subprocess.run(["git", "-C", tree, "rev-parse", "HEAD"], capture_output=True,
                              text=True).stdout.strip() == head  # fmt: skip
    assert not (tmp_path / "tree").exists()
    assert str(tmp_path / "tree") not in harness.git("worktree", "list")


def test_shared_data_is_beside_the_checkout(harness) -> None:
    path = harness.shared_data("msd_task04_hippocampus")
    assert path.name == "msd_task04_hippocampus" and path.parent.name == "data"


# --------------------------------------------------------------------------- the scripts


SCRIPTS = sorted(p.stem for p in BENCH.glob("*.py") if not p.stem.startswith("_"))


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_imports(name: str) -> None:
    """Each script's top level runs (imports, constants) without a bench extra it lacks."""
    sys.path.insert(0, str(BENCH))
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as error:
        if (BENCH / f"{error.name}.py").exists() or error.name in ("_harness", "segcli"):
            raise
        pytest.skip(f"needs {error.name} (the bench extra)")
    finally:
        sys.path.remove(str(BENCH))
        sys.modules.pop(name, None)


def test_a_script_runs_with_help() -> None:
    done = subprocess.run(
        [sys.executable, BENCH / "resampling.py", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0 and "--doc" in done.stdout and "--no-write" in done.stdout
