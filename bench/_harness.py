"""What every benchmark script needs besides what it measures.

``python bench/NAME.py`` puts bench/ on ``sys.path``, so scripts import this by name.

* the machine: :func:`machine` (the line each document states), :func:`cpu_model`,
  :func:`cpu_flags`;
* this process: :func:`best_of`, :func:`interleaved` (timing), :func:`peak_growth`,
  :func:`proc_status_mib` (memory);
* other processes and files: :func:`run` (time, output, the process tree's peak memory),
  :func:`segcli`, :func:`child_json`, :func:`git`, :func:`worktree`, :func:`scratch`,
  :func:`shared_data`, :func:`link_cases`, :func:`timed_fit`, :func:`monai_sliding_window`;
* documents: :func:`row`, :func:`table`, :func:`write_doc`, :func:`block_body`,
  :func:`replace_block`, :func:`write_block`, :func:`write_section`, :func:`doc_options`,
  :func:`publish`, :func:`marked_sections`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "benchmarks.md"
HEADER = (
    "# Benchmarks\n\n"
    "Each section is written by its script in `bench/` (run with `make bench`, or one of\n"
    "`make bench-metrics`, `make bench-inference`, `make bench-train`), with the command and\n"
    "the machine that produced it.  Targets live here, not in timed unit tests.\n"
)
SEGCLI = [sys.executable, "-m", "segcli"]  # this interpreter's segcli
#: the CPU flags that decide torch's CPU speed in fp32 and bf16 (x86; ``bf16``: ARM)
RELEVANT_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile", "bf16")
K = TypeVar("K")

try:  # the 1-minute load average when the script started (it imports this first)
    START_LOAD: float | None = os.getloadavg()[0]
except OSError:
    START_LOAD = None


# --------------------------------------------------------------------------- the machine


def _cpuinfo(key: str) -> str | None:
    """The value of the first ``key`` line of /proc/cpuinfo (None: none, or not Linux)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == key:
                return value.strip()
    return None


def cpu_model() -> str:
    """The CPU's model name."""
    return _cpuinfo("model name") or platform.processor() or platform.machine() or "unknown"


def cpu_flags() -> str:
    """The CPU's flags among :data:`RELEVANT_FLAGS` (in /proc/cpuinfo's order), or 'none of …'."""
    flags = (_cpuinfo("flags") or _cpuinfo("Features") or "").split()  # x86, ARM
    return " ".join(f for f in flags if f in RELEVANT_FLAGS) or "none of " + ", ".join(
        RELEVANT_FLAGS
    )


def machine() -> str:
    """One line describing this machine: cores, CPU model and flags, GPU, Python, torch and its
    threads, the load average when the script started."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    load = "" if START_LOAD is None else f", 1-min load average {START_LOAD:.1f} when the run began"
    return (
        f"{os.cpu_count()} cores ({cpu_model()}; flags {cpu_flags()}), {gpu}, "
        f"Python {platform.python_version()}, torch {torch.__version__}, "
        f"torch threads {torch.get_num_threads()}{load}"
    )


# --------------------------------------------------------------------------- this process


def best_of(call: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """The fastest wall time of ``repeats`` calls, and the last call's result."""
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = call()
        best = min(best, time.perf_counter() - start)
    return best, out


def interleaved(
    calls: Mapping[K, Callable[[], Any]], repeats: int, warmup: int = 0
) -> dict[K, float]:
    """The fastest seconds of each of ``calls``, timed in turn (so that other users' load hits
    every variant alike; the minimum, since other work only adds time), after ``warmup``
    untimed calls of each."""
    for call in calls.values():
        for _ in range(warmup):
            call()
    times: dict[K, list[float]] = {k: [] for k in calls}
    for _ in range(repeats):
        for key, call in calls.items():
            start = time.perf_counter()
            call()
            times[key].append(time.perf_counter() - start)
    return {k: min(v) for k, v in times.items()}


def proc_status_mib(*keys: str) -> dict[str, float]:
    """Fields of /proc/self/status (``VmRSS``, ``VmHWM``, ``RssFile``, …) in MiB (Linux)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return {key: int(fields[key].split()[0]) / 1024 for key in keys}


@dataclass
class Peak:
    """:func:`peak_growth`'s result: peak resident MiB above the level where the block began."""

    mib: float = float("nan")


@contextlib.contextmanager
def peak_growth() -> Iterator[Peak]:
    """``with peak_growth() as peak: work()`` sets ``peak.mib`` to this process' peak resident
    memory growth during the block (Linux: VmHWM, reset through /proc/self/clear_refs)."""
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before, peak = proc_status_mib("VmRSS")["VmRSS"], Peak()
    yield peak
    peak.mib = proc_status_mib("VmHWM")["VmHWM"] - before


# --------------------------------------------------------------------------- other processes


class CommandFailed(SystemExit):
    """A :func:`run` command exited non-zero or timed out; uncaught, it ends the script with
    its message (the command and the tails of its output)."""


@dataclass
class Run:
    """A finished command: exit code, wall and CPU seconds (user + system of the command and
    its children), output and — when :func:`run` polled — the peak summed RSS and PSS of its
    process tree (bytes) and the most processes seen at once."""

    cmd: list[str]
    returncode: int
    seconds: float
    cpu_seconds: float
    stdout: str
    stderr: str
    rss: int = 0
    pss: int = 0
    procs: int = 0

    def json(self) -> Any:
        """The last line of stdout, read as JSON."""
        return json.loads(self.stdout.strip().splitlines()[-1])

    def figures(self) -> dict[str, float]:
        """Wall seconds and the tree's peak memory, as a plain dict."""
        return {"seconds": self.seconds, "rss": self.rss, "pss": self.pss, "procs": self.procs}


def _tree_memory(root: Any) -> tuple[int, int, int]:
    """Summed RSS and PSS (shared pages split between processes) of the psutil process
    ``root`` and its descendants, and their number."""
    import psutil

    try:
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0, 0
    rss = pss = 0
    for proc in tree:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            mem = proc.memory_full_info()
            rss, pss = rss + mem.rss, pss + getattr(mem, "pss", mem.rss)
    return rss, pss, len(tree)


def run(
    cmd: Sequence[str | Path],
    *,
    cwd: Path | str | None = REPO,
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
    check: bool = True,
    echo: bool = True,
    poll: float | None = None,
    timeout: float | None = None,
) -> Run:
    """Run ``cmd`` in ``cwd`` and time it.  ``log``: also write its output there; ``check``:
    raise :class:`CommandFailed` if it fails; ``echo``: print ``$ cmd`` to stderr; ``poll``:
    every ``poll`` s sum the memory of its process tree (psutil); ``timeout``: kill it then."""
    args = [str(c) for c in cmd]
    if echo:
        print("$", " ".join(args), file=sys.stderr, flush=True)
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    deadline = None if timeout is None else start + timeout
    rss = pss = procs = 0
    with (
        tempfile.TemporaryFile("w+", errors="replace") as out,
        tempfile.TemporaryFile("w+", errors="replace") as err,
    ):
        proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=out, stderr=err, text=True)
        try:
            if poll is not None:
                import psutil

                with contextlib.suppress(psutil.NoSuchProcess):
                    watched = psutil.Process(proc.pid)
                    while True:  # at least one reading, however short the command
                        r, p, n = _tree_memory(watched)
                        rss, pss, procs = max(rss, r), max(pss, p), max(procs, n)
                        if proc.poll() is not None:
                            break
                        if deadline is not None and time.perf_counter() > deadline:
                            raise subprocess.TimeoutExpired(args, timeout or 0)
                        time.sleep(poll)
            code = proc.wait(None if deadline is None else max(deadline - time.perf_counter(), 0))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise CommandFailed(f"command ran past {timeout} s: {shlex.join(args)}") from None
        seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(stdout + stderr)
    if check and code != 0:
        tails = "\n".join("\n".join(t.rstrip().splitlines()[-40:]) for t in (stdout, stderr))
        where = "" if log is None else f" (log: {log})"
        raise CommandFailed(f"command failed ({code}): {shlex.join(args)}{where}\n{tails}")
    return Run(args, code, seconds, cpu, stdout, stderr, rss, pss, procs)


def segcli(*args: str | Path, **kwargs: Any) -> Run:
    """``python -m segcli ARGS`` through :func:`run` (same keywords)."""
    return run([*SEGCLI, *args], **kwargs)


def child_json(script: str | Path, *args: Any, **kwargs: Any) -> Any:
    """``script`` (the caller's ``__file__``, in its child role) with ``args`` in a fresh
    interpreter: its last stdout line, read as JSON.  Keywords: :func:`run`'s."""
    kwargs.setdefault("echo", False)
    return run([sys.executable, str(script), *map(str, args)], **kwargs).json()


def git(*args: str | Path, check: bool = True) -> str:
    """``git ARGS`` in the repository: its stdout, stripped."""
    return run(["git", "-C", REPO, *args], check=check, echo=False).stdout.strip()


@contextlib.contextmanager
def worktree(ref: str, where: Path) -> Iterator[Path]:
    """A ``git worktree`` of ``ref`` at ``where`` for the block (another commit's code, to run
    with ``PYTHONPATH`` and ``cwd`` set to it), removed afterwards, also on errors."""
    git("worktree", "add", "--detach", where, ref)
    try:
        yield where
    finally:
        git("worktree", "remove", "--force", where, check=False)
        shutil.rmtree(where, ignore_errors=True)
        git("worktree", "prune", check=False)


@contextlib.contextmanager
def scratch(prefix: str, parent: str | Path | None = None, keep: bool = False) -> Iterator[Path]:
    """A new temporary folder for the block, removed afterwards (also on errors) unless
    ``keep`` (then its path is printed)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield folder
    finally:
        if keep:
            print(f"kept {folder}", file=sys.stderr)
        else:
            shutil.rmtree(folder, ignore_errors=True)


def shared_data(name: str) -> Path:
    """``shared/data/NAME`` beside this checkout, or beside the main checkout when this is a
    ``git worktree`` (the first place when neither has it)."""
    first = REPO.parent / "shared" / "data" / name
    if not first.is_dir():
        common = git("rev-parse", "--path-format=absolute", "--git-common-dir", check=False)
        other = Path(common).parent.parent / "shared" / "data" / name
        if common and other.is_dir():
            return other
    return first


def link_cases(root: Path, names: Iterable[str], images: Path, labels: Path | None = None) -> None:
    """New folders ``images`` (and ``labels``) of symlinks to the cases ``names`` of the dataset
    ``root`` (imagesTr/NAME.nii.gz, labelsTr/NAME.nii.gz)."""
    pairs = [(root / "imagesTr", images)] + ([(root / "labelsTr", labels)] if labels else [])
    for _, folder in pairs:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    for name in names:
        for source, folder in pairs:
            os.symlink((source / f"{name}.nii.gz").resolve(), folder / f"{name}.nii.gz")


def timed_fit(exp: Any, **kwargs: Any) -> tuple[Any, float]:
    """segcli's training of ``exp`` on the CPU from scratch (its run folder removed first):
    the result of ``fit`` and the wall seconds."""
    from segcli.engine.train import fit

    shutil.rmtree(Path(exp.output) / exp.name, ignore_errors=True)
    start = time.perf_counter()
    return fit(exp, device="cpu", **kwargs), time.perf_counter() - start


def monai_sliding_window(
    model: Any, image: Any, patch: Sequence[int], batch: int, overlap: float
) -> Any:
    """The MONAI peer: ``sliding_window_inference`` as its users write it — gaussian blending
    (``sigma_scale=0.125``: segcli's σ = patch/8) of softmax probabilities (of the
    full-resolution output of a deep-supervision net), under ``torch.inference_mode()``.
    ``image`` ``(C, *spatial)`` → ``(classes, *spatial)``."""
    import torch
    from monai.inferers import sliding_window_inference

    def predictor(x: torch.Tensor) -> torch.Tensor:
        out = model(x)
        return torch.softmax((out[0] if isinstance(out, list | tuple) else out).float(), 1)

    with torch.inference_mode():
        out = sliding_window_inference(
            image[None],
            tuple(patch),
            batch,
            predictor,
            overlap=overlap,
            mode="gaussian",
            sigma_scale=0.125,
        )
    return out[0]


# --------------------------------------------------------------------------- documents


def row(*cells: object) -> str:
    """A markdown table row: ``row("a", 1)`` is ``| a | 1 |``."""
    return "| " + " | ".join(map(str, cells)) + " |"


def table(
    columns: Sequence[str], rows: Iterable[Sequence[object]] = (), align: str = ""
) -> list[str]:
    """A markdown table's header, separator and ``rows``; ``align``: a letter per column, ``l``
    (``---``, the default) or ``r`` (``---:``)."""
    marks = "".join({"l": "---|", "r": "---:|"}[a] for a in align.ljust(len(columns), "l"))
    return [row(*columns), "|" + marks, *(row(*r) for r in rows)]


def write_doc(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a temporary file, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    print(f"wrote {path}", file=sys.stderr)


def _block(start: str, end: str) -> re.Pattern[str]:
    return re.compile(re.escape(start) + r"\n?(.*?)\n?" + re.escape(end), re.S)


def block_body(text: str, start: str, end: str) -> str | None:
    """What stands between the markers ``start`` and ``end`` in ``text`` (None: no block)."""
    match = _block(start, end).search(text)
    return None if match is None else match.group(1)


def replace_block(text: str, start: str, end: str, body: str) -> str:
    """``text`` with ``body`` between the markers (the first such block), or with the marked
    block appended when it has none."""
    block, pattern = f"{start}\n{body}\n{end}", _block(start, end)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text, count=1)
    return text.rstrip() + "\n\n" + block + "\n"


def write_block(doc: Path, start: str, end: str, body: str, empty: str = "") -> None:
    """:func:`replace_block` in the file ``doc`` (``empty``: the text of a new one), atomically."""
    write_doc(doc, replace_block(doc.read_text() if doc.exists() else empty, start, end, body))


def write_section(name: str, body: str, doc: Path = DOC) -> None:
    """Replace (or append) the section between the markers for ``name`` in ``doc``."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    write_block(doc, start, end, body.rstrip(), empty=HEADER if doc == DOC else "")
    print(f"wrote section '{name}' of {doc}", file=sys.stderr)


def doc_options(parser: argparse.ArgumentParser, doc: Path = DOC) -> None:
    """``--no-write`` (print only) and ``--doc PATH`` (another file than ``doc``)."""
    parser.add_argument("--no-write", action="store_true", help="print, do not touch the document")
    default = doc.relative_to(REPO) if doc.is_relative_to(REPO) else doc
    parser.add_argument("--doc", type=Path, default=doc, help=f"the document (default {default})")


def publish(args: argparse.Namespace, name: str, body: str) -> None:
    """Print ``body``; write it as section ``name`` of ``args.doc`` unless ``args.no_write``."""
    print(body)
    if not args.no_write:
        write_section(name, body, args.doc)


def marked_sections(path: Path) -> str:
    """Every ``<!-- bench:NAME -->`` … ``<!-- /bench:NAME -->`` block of ``path`` ('' if none),
    for a script that rewrites a whole document to keep the sections other scripts own."""
    if not path.exists():
        return ""
    blocks = re.finditer(r"<!-- bench:([\w-]+) -->.*?<!-- /bench:\1 -->", path.read_text(), re.S)
    return "\n\n".join(match.group(0) for match in blocks)
