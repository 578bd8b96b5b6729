"""``segcli synth``: write the lecture's toy data set."""

from __future__ import annotations

from pathlib import Path

from segcli.data.synth import generate, generate_nested, write_dataset
from segcli.errors import SegcliError

__all__ = ["run_synth"]


def run_synth(
    out: str | Path,
    dims: int = 2,
    cases: int = 100,
    size: int = 32,
    seed: int = 0,
    lesion: int = 3,
    ring_distance: int = 5,
    noise: float = 0.1,
    nested: bool = False,
) -> str:
    """Generate ``cases`` toy cases into ``out``; returns a one-line summary.

    ``nested``: the nested toy (lesions inside an organ, :func:`segcli.data.synth.
    make_nested_case`) instead of the ring lesions; ``lesion`` and ``ring_distance`` unused.

    Raises:
        SegcliError: parameters :func:`segcli.data.synth.generate` rejects (its message names
            the parameter), or an output path that is a file or cannot be written.
    """
    try:
        if nested:
            data = generate_nested(cases, dims, size, seed=seed, noise=noise)
        else:
            data = generate(cases, dims, size, lesion, ring_distance, seed=seed, noise=noise)
    except ValueError as exc:
        raise SegcliError(f"segcli synth: {exc}") from None
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SegcliError(f"{out}: exists and is not a folder")
    try:
        write_dataset(out, data, nested=nested)
    except OSError as exc:
        raise SegcliError(f"{out}: cannot write the data set ({exc.strerror or exc})") from None
    malign = sum(c.malign for c in data)
    shape = "×".join([str(size)] * dims)
    if nested:
        return (
            f"wrote {cases} {dims}D nested cases ({shape}; {malign} with lesions in the organ, "
            f"{cases - malign} without) to {out}; regions: organ = labels 1, 2; lesion = 2"
        )
    return (
        f"wrote {cases} {dims}D cases ({shape}; {malign} malign, {cases - malign} benign) to {out}"
    )
