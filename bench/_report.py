"""Write one benchmark's results into its own section of docs/benchmarks.md."""

from __future__ import annotations

import os
import platform
import re
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = (
    "# Benchmarks\n\n"
    "Each section is written by its script in `bench/` (run with `make bench`, or one of\n"
    "`make bench-metrics`, `make bench-inference`, `make bench-train`), with the command and\n"
    "the machine that produced it.  Targets live here, not in timed unit tests.\n"
)


def machine() -> str:
    """One line describing this machine (CPU count, model, Python, torch)."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    try:
        load = f", 1-min load average {os.getloadavg()[0]:.1f} when the run began"
    except OSError:
        load = ""
    return (
        f"{os.cpu_count()} cores ({cpu}), {gpu}, Python {platform.python_version()}, "
        f"torch {torch.__version__}, torch threads {torch.get_num_threads()}{load}"
    )


def write_section(name: str, body: str, doc: Path = DOC) -> None:
    """Replace (or append) the section between the markers for ``name`` in ``doc``."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    write_block(doc, start, end, body.rstrip(), empty=HEADER if doc == DOC else "")
    print(f"wrote section '{name}' of {doc}", file=sys.stderr)


def write_block(doc: Path, start: str, end: str, body: str, empty: str = "") -> None:
    """Replace the text between the markers ``start`` and ``end`` of ``doc`` by ``body``, or
    append the marked block when ``doc`` has none (``empty``: the text of a new ``doc``).

    The file is replaced atomically (temporary file, then rename).
    """
    doc.parent.mkdir(parents=True, exist_ok=True)
    text = doc.read_text() if doc.exists() else empty
    block = f"{start}\n{body}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = (
        pattern.sub(lambda _: block, text)
        if pattern.search(text)
        else text.rstrip() + "\n\n" + block + "\n"
    )
    tmp = doc.with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, doc)


def marked_sections(path: Path) -> str:
    """Every ``<!-- bench:NAME -->`` … ``<!-- /bench:NAME -->`` block of ``path`` ('' if none).

    A script that rewrites a whole document appends these, so that the sections other
    scripts own in it survive.
    """
    if not path.exists():
        return ""
    blocks = re.findall(r"<!-- bench:([\w-]+) -->.*?<!-- /bench:\1 -->", path.read_text(), re.S)
    text = path.read_text()
    out = []
    for name in blocks:
        start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
        out.append(text[text.index(start) : text.index(end) + len(end)])
    return "\n\n".join(out)
