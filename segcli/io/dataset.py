"""Find cases in the nnU-Net / MSD raw layout, pair images with labels and predictions with references.

DATASET/imagesTr/<case>_0000.nii.gz   (channel 0; _0001 ... further channels)
DATASET/imagesTr/<case>.nii.gz         (plain MSD naming: one channel)
DATASET/labelsTr/<case>.nii.gz
DATASET/dataset.json                   (optional: labels, channel names)

>>> from segcli.io.dataset import find_cases
>>> cases = find_cases("data/toy", "Tr")
>>> cases[0].name, cases[0].images, cases[0].label
>>> find_inputs("data/toy/imagesTs")             # predict: {case: channel files}
>>> find_inputs("dicom/ct_007")                   # a DICOM series folder: {"ct_007": (folder,)}
>>> pair_cases("pred", "data/toy/labelsTs")      # evaluate: {case: (pred, ref)}

The ``_0000`` channel suffix is recognised here and nowhere else (:func:`split_channel`).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segcli.errors import DataError
from segcli.io.images import (
    IMAGE_SUFFIXES,
    ImageGeometry,
    check_same_grid,
    dicom_series_files,
    is_dicom_file,
    is_dicom_folder,
    read_dicom_series,
    read_geometry,
    read_image,
    strip_suffix,
)

__all__ = [
    "Case",
    "check_pair_grids",
    "dataset_labels",
    "find_cases",
    "find_inputs",
    "group_images",
    "labels_near",
    "list_image_files",
    "pair_cases",
    "pair_images",
    "read_case",
    "read_dataset_json",
    "split_channel",
]

#: nnU-Net's channel suffix: ``<case>_<four digits>`` (after the image suffix is stripped).
_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


def split_channel(stem: str) -> tuple[str, int] | None:
    """``"ct_007_0001"`` → ``("ct_007", 1)``; None when ``stem`` has no four-digit channel suffix."""
    match = _CHANNEL.match(stem)
    return (match["case"], int(match["channel"])) if match else None


def _unchannelled(stem: str) -> str:
    """``stem`` without a ``_0000`` suffix (other channels keep theirs)."""
    split = split_channel(stem)
    return split[0] if split is not None and split[1] == 0 else stem


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
    splits = [split_channel(s) for s in stems]
    if stems and all(split is not None for split in splits):
        groups: dict[str, dict[int, Path]] = defaultdict(dict)
        for path, split in zip(files, splits, strict=True):
            assert split is not None  # checked just above
            case, channel = split
            if channel in groups[case]:
                raise DataError(f"{where}: case '{case}' has two files for channel {channel:04d}")
            groups[case][channel] = path
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


def labels_near(folder: str | Path) -> dict[int, str]:
    """Label names of the dataset.json in ``folder`` or, failing that, in its parent (a
    ``labelsTs/`` folder's dataset root); {} when neither has one."""
    folder = Path(folder)
    for candidate in (folder, folder.parent):
        names = dataset_labels(candidate)
        if names:
            return names
    return {}


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


# --------------------------------------------------------------------------- predict's inputs


def find_inputs(input: str | Path) -> dict[str, tuple[Path, ...]]:
    """Cases to predict: case name → channel files in channel order.

    A file stands for its case: ``ct_007_0000.nii.gz`` brings along ``ct_007_0001.nii.gz`` ...
    from the same folder.  A folder is read like ``imagesTs/`` (files grouped by the
    ``_0000`` channel suffix, or one file per case without it).  A folder without such image
    files may be one DICOM series (one case named after the folder, its "files" the folder
    itself) or hold one DICOM series per sub-folder (one case per sub-folder, named after it).

    Raises:
        DataError: the path does not exist, holds no images (with a hint when it is a dataset
            root with ``imagesTs/``), the channel files are inconsistent, or a DICOM folder
            holds several series or damaged files.
    """
    path = Path(input)
    if path.is_file():
        if not any(path.name.lower().endswith(s) for s in IMAGE_SUFFIXES):
            if is_dicom_file(path):
                raise DataError(
                    f"{path}: a single DICOM file; give --input the folder of its series "
                    f"({path.parent})"
                )
            raise DataError(
                f"{path}: not an image file SimpleITK reads ({', '.join(IMAGE_SUFFIXES)})"
            )
        files = [path]
        channel = split_channel(strip_suffix(path.name))
        if channel is not None:  # bring along the case's other channel files
            files = [
                p
                for p in list_image_files(path.parent)
                if (split_channel(strip_suffix(p.name)) or ("",))[0] == channel[0]
            ]
            if path not in files:  # a hidden file is not listed, but was asked for by name
                files = sorted([*files, path])
        return group_images(files, path.parent)
    if not path.is_dir():
        raise DataError(f"{path}: input not found (give an image file or a folder of images)")
    files = list_image_files(path)
    if not files:
        sub = [d for d in ("imagesTs", "imagesTr") if (path / d).is_dir()]
        if sub:
            raise DataError(
                f"{path}: no images directly in this folder; it looks like a dataset root — "
                f"point --input at the images folder, e.g. {path / sub[0]}"
            )
        dicom = _dicom_inputs(path)
        if dicom:
            return dicom
        raise DataError(
            f"{path}: no images found ({', '.join(IMAGE_SUFFIXES)}, or DICOM series files)"
        )
    return group_images(files, path)


def _dicom_inputs(folder: Path) -> dict[str, tuple[Path, ...]]:
    """``{folder name: (folder,)}`` for a DICOM series folder (checked: exactly one readable
    series), ``{sub-folder name: (sub-folder,)}`` for each DICOM sub-folder (checked when
    read, so one damaged series fails only its case), or {} when there is no DICOM."""
    if is_dicom_folder(folder):
        dicom_series_files(folder)  # several series or damaged files: refused before any work
        return {folder.resolve().name or "series": (folder,)}
    subfolders = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    return {d.name: (d,) for d in subfolders if is_dicom_folder(d)}


def read_case(files: tuple[Path, ...], in_channels: int) -> tuple[np.ndarray, ImageGeometry]:
    """Stack a case's channel files into ``(C, *spatial)`` float32 on the first file's grid.

    ``files`` may instead hold one DICOM series folder (see :func:`find_inputs`): one channel,
    ``(1, z, y, x)``, with the geometry SimpleITK derives from the series.

    Raises:
        DataError: unreadable file or series, NaN/inf intensities, channels on different grids,
            or a channel count other than ``in_channels``.
    """
    if len(files) == 1 and files[0].is_dir():
        if in_channels != 1:
            raise DataError(
                f"{files[0]}: a DICOM series folder is one channel but the model takes "
                f"model.in_channels = {in_channels}"
            )
        array, geometry = read_dicom_series(files[0])
        return array[None], geometry
    if len(files) != in_channels:
        raise DataError(
            f"{files[0]}: the case has {len(files)} channel file(s) but the model takes "
            f"model.in_channels = {in_channels} (<case>_0000 ... <case>_{in_channels - 1:04d})"
        )
    arrays, geometry = [], None
    for path in files:
        array, geo = read_image(path)
        if geometry is None:
            geometry = geo
        else:
            check_same_grid(geo, geometry, f"{path} vs {files[0].name}")
        arrays.append(array)
    assert geometry is not None  # files is not empty: in_channels >= 1
    return np.stack(arrays), geometry


# --------------------------------------------------------------------------- evaluate's pairs


def _case_files(folder: Path, what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise DataError(f"{folder}: {what} folder not found")
    files = list_image_files(folder)
    if not files:
        raise DataError(f"{folder}: no {what} label maps found ({', '.join(IMAGE_SUFFIXES)})")
    out: dict[str, Path] = {}
    for path in files:
        stem = strip_suffix(path.name)
        if stem in out:
            raise DataError(
                f"{folder}: two {what} files for case '{stem}' ({out[stem].name}, {path.name})"
            )
        out[stem] = path
    return out


def pair_cases(
    pred_dir: str | Path, ref_dir: str | Path, cases: Sequence[str] | None = None
) -> dict[str, tuple[Path, Path]]:
    """Pair prediction and reference files by case name: ``{case: (pred, ref)}``, sorted.

    File names are compared without their image suffix; a name that only matches once a
    ``_0000`` channel suffix is removed (on either side) is paired too, and the case takes the
    name without it.  ``cases``: only these cases, from folders that may hold others (e.g. a
    cross-validation fold's validation cases among a dataset's references).

    Raises:
        DataError: a folder is missing or empty, or a file has no partner (names the case).
    """
    pred_dir, ref_dir = Path(pred_dir), Path(ref_dir)
    preds = _case_files(pred_dir, "prediction")
    refs = _case_files(ref_dir, "reference")
    if cases is not None:
        wanted = set(cases)
        preds = {k: v for k, v in preds.items() if k in wanted or _unchannelled(k) in wanted}
        refs = {k: v for k, v in refs.items() if k in wanted or _unchannelled(k) in wanted}
        missing = sorted(wanted - {_unchannelled(k) for k in preds} - set(preds))
        if missing:
            raise DataError(
                f"case '{missing[0]}': no prediction in {pred_dir}"
                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            )
    pairs: dict[str, tuple[Path, Path]] = {
        stem: (preds[stem], refs[stem]) for stem in preds.keys() & refs.keys()
    }
    loose_preds = {_unchannelled(s): p for s, p in preds.items() if s not in refs}
    loose_refs = {_unchannelled(s): p for s, p in refs.items() if s not in preds}
    for case in sorted(loose_preds.keys() & loose_refs.keys()):
        if case in pairs:
            raise DataError(
                f"case '{case}': more than one file pairs with it "
                f"({pred_dir}: {loose_preds[case].name}, {ref_dir}: {loose_refs[case].name})"
            )
        pairs[case] = (loose_preds.pop(case), loose_refs.pop(case))
    for missing, where, other in (
        (loose_preds, ref_dir, "prediction"),
        (loose_refs, pred_dir, "reference"),
    ):
        if missing:
            names = sorted(missing)
            partner = "reference" if other == "prediction" else "prediction"
            more = ""
            if len(names) > 1:
                shown = ", ".join(names[1:4]) + (", ..." if len(names) > 4 else "")
                more = f" (and {len(names) - 1} more: {shown})"
            raise DataError(
                f"case '{names[0]}': {other} {missing[names[0]].name} has no {partner} in "
                f"{where}{more}; every prediction needs a reference with the same case name"
            )
    return dict(sorted(pairs.items()))


def pair_images(images_dir: Path, cases: Sequence[str]) -> dict[str, Path]:
    """The first channel file of each of ``cases`` in ``images_dir`` (``_0000`` or plain name).

    Raises:
        DataError: the folder is missing or a case has no image (names the case).
    """
    if not images_dir.is_dir():
        raise DataError(f"{images_dir}: images folder not found")
    grouped = group_images(list_image_files(images_dir), images_dir)
    by_name = {**{_unchannelled(k): v for k, v in grouped.items()}, **grouped}
    missing = [case for case in cases if case not in by_name]
    if missing:
        raise DataError(
            f"case '{missing[0]}': no image in {images_dir} for the overlay "
            f"(expected {missing[0]}_0000.nii.gz or {missing[0]}.nii.gz)"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    return {case: by_name[case][0] for case in cases}


def check_pair_grids(
    pairs: dict[str, tuple[Path, Path]], images: dict[str, Path] | None = None
) -> None:
    """Every (prediction, reference) pair (and image) on one grid, from the headers only.

    Raises:
        DataError: an unreadable header (naming the case).
        GeometryError: the first pair whose size, spacing, origin or direction differ.
    """
    for case, (pred, ref) in pairs.items():
        try:
            pred_geometry, ref_geometry = read_geometry(pred), read_geometry(ref)
            image_geometry = read_geometry(images[case]) if images else None
        except DataError as exc:
            raise DataError(f"case '{case}': {exc}") from None
        check_same_grid(
            pred_geometry,
            ref_geometry,
            f"case '{case}': prediction {pred.name} vs reference {ref.name}",
        )
        if image_geometry is not None and images is not None:
            check_same_grid(
                image_geometry,
                ref_geometry,
                f"case '{case}': image {images[case].name} vs reference {ref.name}",
            )
