"""Find cases in the nnU-Net / MSD raw layout and pair images with labels.

DATASET/imagesTr/<case>_0000.nii.gz   (channel 0; _0001 ... further channels)
DATASET/imagesTr/<case>.nii.gz         (plain MSD naming: one channel)
DATASET/labelsTr/<case>.nii.gz
DATASET/dataset.json                   (optional: labels, channel names)

>>> from segcli.io.dataset import find_cases
>>> cases = find_cases("data/toy", "Tr")
>>> cases[0].name, cases[0].images, cases[0].label
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segcli.errors import DataError
from segcli.io.images import IMAGE_SUFFIXES, check_same_grid, read_geometry, strip_suffix

__all__ = ["Case", "find_cases", "group_images", "list_image_files", "read_dataset_json"]

_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass(frozen=True)
class Case:
    """One case: its name, its channel files (in channel order) and its label file if any."""

    name: str
    images: tuple[Path, ...]
    label: Path | None = None


def list_image_files(folder: Path) -> list[Path]:
    """Image files in ``folder`` (hidden files and unknown suffixes skipped), sorted."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file()
        and not p.name.startswith(".")
        and any(p.name.lower().endswith(s) for s in IMAGE_SUFFIXES)
    )


def group_images(files: list[Path], where: str | Path = "") -> dict[str, tuple[Path, ...]]:
    """Group image files into cases by the ``_0000`` channel suffix.

    If every file carries a four-digit channel suffix the nnU-Net naming is used; otherwise each
    file is one single-channel case (the original MSD naming).  Channels must run 0..C-1 and every
    case must have the same number.

    Raises:
        DataError: a case misses a channel, or cases have different channel counts.
    """
    stems = [strip_suffix(p.name) for p in files]
    if stems and all(_CHANNEL.match(s) for s in stems):
        groups: dict[str, dict[int, Path]] = defaultdict(dict)
        for path, stem in zip(files, stems, strict=True):
            m = _CHANNEL.match(stem)
            assert m is not None
            channel = int(m["channel"])
            if channel in groups[m["case"]]:
                raise DataError(
                    f"{where}: case '{m['case']}' has two files for channel {channel:04d}"
                )
            groups[m["case"]][channel] = path
        out: dict[str, tuple[Path, ...]] = {}
        counts = set()
        for case, channels in sorted(groups.items()):
            expected = list(range(len(channels)))
            if sorted(channels) != expected:
                missing = sorted(set(range(max(channels) + 1)) - set(channels))
                raise DataError(
                    f"{where}: case '{case}' is missing channel file(s) "
                    + ", ".join(f"{case}_{c:04d}" for c in missing)
                )
            out[case] = tuple(channels[c] for c in expected)
            counts.add(len(channels))
        if len(counts) > 1:
            most = max(counts)
            short = next(case for case, files in out.items() if len(files) < most)
            missing = ", ".join(f"{short}_{c:04d}" for c in range(len(out[short]), most))
            raise DataError(
                f"{where}: cases have different numbers of channels ({sorted(counts)}): case "
                f"'{short}' has {len(out[short])}, missing {missing}; every case needs the same "
                "_0000, _0001, ... files"
            )
        return out
    out = {}
    for path, stem in zip(files, stems, strict=True):
        if stem in out:
            raise DataError(f"{where}: two image files for case '{stem}'")
        out[stem] = (path,)
    return out


def read_dataset_json(root: str | Path) -> dict[str, Any]:
    """The dataset's ``dataset.json`` as a dict ({} if absent).

    Raises:
        DataError: the file exists but is not valid JSON.
    """
    path = Path(root) / "dataset.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a valid dataset.json ({exc})") from None


def dataset_labels(root: str | Path) -> dict[int, str]:
    """``{value: name}`` from dataset.json's ``labels`` (either orientation), or {}."""
    labels = read_dataset_json(root).get("labels") or {}
    out: dict[int, str] = {}
    for key, value in labels.items():
        if str(key).lstrip("-").isdigit():
            out[int(key)] = str(value)
        elif isinstance(value, int) or str(value).isdigit():  # nnU-Net v2: {"name": value}
            out[int(value)] = str(key)
    return out


def find_cases(
    root: str | Path,
    subset: str = "Tr",
    require_labels: bool = True,
    check_geometry: bool = True,
) -> list[Case]:
    """Discover the cases of ``root/images<subset>`` and pair them with ``root/labels<subset>``.

    Args:
        root: dataset folder.
        subset: ``"Tr"`` or ``"Ts"``.
        require_labels: every image needs a label (and every label an image).
        check_geometry: read the headers and require every channel and the label to share one
            grid (size, spacing, origin, direction).

    Raises:
        DataError: folder missing or empty, a case without partner, mismatched geometry.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    image_dir = root / f"images{subset}"
    if not image_dir.is_dir():
        raise DataError(
            f"{root}: no images{subset}/ folder; expected the nnU-Net/MSD layout "
            f"(images{subset}/<case>_0000.nii.gz, labels{subset}/<case>.nii.gz)"
        )
    grouped = group_images(list_image_files(image_dir), image_dir)
    if not grouped:
        raise DataError(f"{image_dir}: no images found ({', '.join(IMAGE_SUFFIXES)})")
    label_dir = root / f"labels{subset}"
    labels: dict[str, Path] = {}
    if label_dir.is_dir():
        for path in list_image_files(label_dir):
            labels[strip_suffix(path.name)] = path
    if require_labels:
        no_label = sorted(set(grouped) - set(labels))
        no_image = sorted(set(labels) - set(grouped))
        if no_label:
            raise DataError(
                f"{root}: case '{no_label[0]}' has no label in {label_dir.name}/"
                + (f" (and {len(no_label) - 1} more)" if len(no_label) > 1 else "")
            )
        if no_image:
            raise DataError(
                f"{root}: label '{no_image[0]}' has no image in {image_dir.name}/"
                + (f" (and {len(no_image) - 1} more)" if len(no_image) > 1 else "")
            )
    cases = [Case(name, images, labels.get(name)) for name, images in grouped.items()]
    if check_geometry:
        for case in cases:
            check_case_geometry(case)
    return cases


def check_case_geometry(case: Case) -> None:
    """Every channel and the label of ``case`` must share one grid (headers only)."""
    reference = read_geometry(case.images[0])
    for path in case.images[1:]:
        check_same_grid(read_geometry(path), reference, f"case '{case.name}': {path.name}")
    if case.label is not None:
        check_same_grid(
            read_geometry(case.label),
            reference,
            f"case '{case.name}': label {case.label.name} vs image {case.images[0].name}",
        )
