"""Training-loop throughput: iterations per second, share of time waiting for data, peak memory.

    make bench-train            # or: .venv/bin/python bench/train.py [--workers 0 2]
    .venv/bin/python bench/train.py --quick --no-write      # a smoke run

Trains experiments/toy3d-unet.yaml for a short schedule on freshly generated 3D toy data (no
validation) once per worker count and writes a table to docs/benchmarks.md.  Target: the loop
waits for data less than 10% of the time with 2 workers.

Second section (``train-profile``): where an epoch of experiments/hippocampus.yaml goes — data
wait, the steps (against the same step timed bare, without the loop: the difference is the
loop's Python overhead per step), validation, checkpoints, log and curves.png — for fp32 and
bf16, by wrapping the loop's own functions with timers (no change to the loop).
"""

from __future__ import annotations

import argparse
import datetime
import json
import resource
import sys
import time
from typing import Any

from _harness import (
    REPO,
    child_json,
    doc_options,
    interleaved,
    machine,
    publish,
    scratch,
    table,
)


def run_one(workers: int, data_root: str, iterations: int, run_dir: str) -> dict:
    """Train in this process and return the measurements (called in a subprocess)."""
    from segcli.config import load
    from segcli.engine.runtime import set_quiet
    from segcli.engine.train import fit

    set_quiet(True)
    exp = load(
        REPO / "experiments/toy3d-unet.yaml",
        [
            f"data.root={data_root}",
            "data.val_fraction=0",
            "train.epochs=2",
            f"train.iterations_per_epoch={iterations}",
            f"train.workers={workers}",
        ],
    )
    start = time.perf_counter()
    result = fit(exp, run_dir=run_dir, device="cpu")
    seconds = time.perf_counter() - start
    busy = result.data_seconds + result.compute_seconds
    return {
        "workers": workers,
        "iterations": result.iterations,
        "batch_size": exp.train.batch_size,
        "seconds": seconds,
        "it_per_s": result.iterations / busy,
        "data_wait_share": result.data_seconds / busy,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def profile_one(precision: str, run_dir: str, iterations: int, epochs: int, val_cases: int) -> dict:
    """Train the Hippocampus spec briefly with timers around the loop's parts (in a subprocess)."""
    import torch

    from segcli.config import load
    from segcli.engine import train
    from segcli.engine.runtime import set_quiet

    set_quiet(True)
    timers: dict[str, float] = {}
    calls: dict[str, int] = {}

    def timed(name: str, fn):  # type: ignore[no-untyped-def]
        def wrapper(*a, **k):  # type: ignore[no-untyped-def]
            start = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                timers[name] = timers.get(name, 0.0) + time.perf_counter() - start
                calls[name] = calls.get(name, 0) + 1

        return wrapper

    from segcli.engine.run_dir import RunDir

    train.validate = timed("validate", train.validate)
    for name in ("plot_curves", "save_checkpoint", "write_log"):
        setattr(RunDir, name, timed(name, getattr(RunDir, name)))
    exp = load(
        REPO / "experiments/hippocampus.yaml",
        [
            f"train.precision={precision}",
            f"train.epochs={epochs}",
            f"train.iterations_per_epoch={iterations}",
            "train.val_every=1",
            f"train.val_max_cases={val_cases}",
        ],
    )
    start = time.perf_counter()
    result = train.fit(exp, run_dir=run_dir, device="cpu")
    total = time.perf_counter() - start
    # the same step without the loop around it (bench/precision.py's Step)
    from precision import Step

    from segcli.precision import memory_format

    layout = memory_format(3, "cpu") != torch.contiguous_format
    bare = interleaved(
        {"step": Step(3, precision, layout, True, exp.train.batch_size, exp.data.patch_size)},
        repeats=max(iterations // 2, 3),
        warmup=2,
    )["step"]
    return {
        "precision": precision,
        "epochs": epochs,
        "iterations": result.iterations,
        "total": total,
        "data": result.data_seconds,
        "compute": result.compute_seconds,
        "bare_step": bare,
        "timers": timers,
        "calls": calls,
        "val_cases": val_cases,
    }


def _child_row(*argv: Any) -> dict[str, Any]:
    """This script in a fresh process with ``argv``: its JSON row (echoed to stderr as progress)."""
    result = child_json(__file__, *argv)
    print(result, file=sys.stderr)
    return result


def profile_section(args: argparse.Namespace) -> str:
    rows = []
    with scratch("segcli-bench-train-") as tmp:
        for precision in args.precisions:
            rows.append(
                _child_row(
                    *("--profile-child", f"{precision}|{tmp / precision}"),
                    *("--profile-iterations", args.profile_iterations),
                    *("--profile-epochs", args.profile_epochs),
                    *("--profile-val-cases", args.profile_val_cases),
                )
            )
    lines = [
        "## Where a training epoch goes (`bench/train.py`, Hippocampus)",
        "",
        f"Command: `.venv/bin/python bench/train.py --profile-iterations {args.profile_iterations} "
        f"--profile-epochs {args.profile_epochs} --profile-val-cases {args.profile_val_cases}`"
        f" (part of `make bench-train`), {time.strftime('%Y-%m-%d')}.  ",
        f"Machine: {machine()}.",
        "",
        f"experiments/hippocampus.yaml with {args.profile_epochs} epochs × "
        f"{args.profile_iterations} iterations, validation after every epoch on "
        f"{args.profile_val_cases} cases (the spec: every 4 epochs on all of them), CPU.  Seconds "
        "over the whole run; *loop overhead* = loop step time − the same step timed bare "
        "(bench/precision.py `Step`, best of N), per step.",
        "",
        *table(
            ["precision", "wall s", "data wait", "steps", "s/step in loop", "s/step bare"]
            + ["loop overhead/step", "validation s (per case)", "checkpoints s"]
            + ["log + curves.png s"],
            align="lrrrrrrrrr",
        ),
    ]
    for r in rows:
        t, c = r["timers"], r["calls"]
        per_step = r["compute"] / max(r["iterations"], 1)
        val_cases = max(c.get("validate", 0) * r["val_cases"], 1)
        lines.append(
            f"| {r['precision']} | {r['total']:.1f} | {r['data']:.1f} | {r['compute']:.1f} | "
            f"{per_step:.3f} | {r['bare_step']:.3f} | {per_step - r['bare_step']:+.3f} | "
            f"{t.get('validate', 0):.1f} ({t.get('validate', 0) / val_cases:.3f}) | "
            f"{t.get('save_checkpoint', 0):.2f} | "
            f"{t.get('write_log', 0) + t.get('plot_curves', 0):.2f} "
            f"({c.get('plot_curves', 0)} redraws) |"
        )
    lines += [
        "",
        "curves.png is redrawn after validated epochs, the last epoch and otherwise at most "
        "every 30 s (a redraw costs ~0.2 s of matplotlib; every epoch it was ~2% of a "
        "Hippocampus run and more with bf16's shorter epochs).",
    ]
    if args.quick:
        lines += ["", "**Quick setting: a smoke test, not a result.**"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--profile-iterations", type=int, default=40)
    parser.add_argument("--profile-epochs", type=int, default=3)
    parser.add_argument("--profile-val-cases", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="tiny settings (smoke test)")
    doc_options(parser)
    parser.add_argument("--child", type=str, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--profile-child", type=str, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        workers, root, run_dir = args.child.split("|")
        print(json.dumps(run_one(int(workers), root, args.iterations, run_dir)))
        return
    if args.profile_child:
        precision, run_dir = args.profile_child.split("|")
        result = profile_one(
            precision,
            run_dir,
            args.profile_iterations,
            args.profile_epochs,
            args.profile_val_cases,
        )
        print(json.dumps(result))
        return
    if args.quick:
        args.iterations, args.workers = 4, [0]
        args.profile_iterations, args.profile_epochs, args.profile_val_cases = 4, 2, 2
    from segcli.data.synth import generate, write_dataset

    rows = []
    with scratch("segcli-bench-train-") as tmp:
        root = tmp / "toy3d"
        write_dataset(root, generate(40, dims=3, seed=0))
        for workers in args.workers:
            child = f"{workers}|{root}|{tmp / f'run{workers}'}"
            rows.append(_child_row("--iterations", args.iterations, "--child", child))
    lines = [
        "## Training loop (`bench/train.py`)",
        "",
        f"Command: `.venv/bin/python bench/train.py --iterations {args.iterations}`, "
        f"{datetime.date.today().isoformat()} "
        f"(experiments/toy3d-unet.yaml: 3D U-Net, 8 filters, depth 3, patch 32³, batch 4, "
        "2 epochs, no validation, CPU).",
        "",
        f"Machine: {machine()}.",
        "",
        *table(
            [
                "workers",
                "iterations",
                "iterations/s",
                "samples/s",
                "data-wait share",
                "peak RSS (MB)",
            ],
            align="rrrrrr",
        ),
    ]
    for r in rows:
        lines.append(
            f"| {r['workers']} | {r['iterations']} | {r['it_per_s']:.2f} | "
            f"{r['it_per_s'] * r['batch_size']:.1f} | {100 * r['data_wait_share']:.1f}% | "
            f"{r['peak_rss_mb']:.0f} |"
        )
    share = next((r["data_wait_share"] for r in rows if r["workers"] == 2), None)
    if share is not None:
        verdict = "met" if share < 0.10 else "NOT met"
        lines += [
            "",
            f"Target: data-wait share < 10% with 2 workers — {verdict} ({100 * share:.1f}%).",
        ]
    profile = profile_section(args)
    publish(args, "train", "\n".join(lines))
    publish(args, "train-profile", profile)


if __name__ == "__main__":
    main()
