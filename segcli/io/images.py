"""Read and write images with their geometry.  The ONLY module that touches SimpleITK arrays.

SimpleITK reports size and spacing in (x, y, z) order while ``GetArrayFromImage`` returns
(z, y, x).  Here every per-axis tuple is converted to **array axis order** on read and back
on write, so the rest of segcli never thinks about it.

    >>> from segcli.io.images import read_image, write_image
    >>> array, geometry = read_image("case_0000.nii.gz")   # array (z, y, x), float32
    >>> geometry.spacing                                     # (sz, sy, sx) in mm
    >>> write_image("out.nii.gz", array > 0, geometry)       # same grid, written atomically
    >>> array, geometry = read_dicom_series("ct_series/")    # a DICOM series folder
"""

from __future__ import annotations

import contextlib
import gzip
import locale
import os
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk

from segcli.atomic import atomic_path
from segcli.errors import DataError, GeometryError

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageGeometry",
    "check_same_grid",
    "from_sitk",
    "dicom_series_files",
    "index_to_physical",
    "is_dicom_file",
    "is_dicom_folder",
    "make_geometry",
    "physical_to_index",
    "to_sitk",
    "read_dicom_series",
    "read_geometry",
    "read_image",
    "read_label",
    "strip_suffix",
    "write_image",
]

#: File name endings SimpleITK reads that segcli looks for in dataset folders.
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")


def strip_suffix(name: str) -> str:
    """``"case_0000.nii.gz"`` → ``"case_0000"`` (only known image suffixes are removed)."""
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


@dataclass(frozen=True)
class ImageGeometry:
    """Where an image's voxels are in physical space.

    Attributes:
        size: voxels per axis, array axis order.
        spacing: mm per voxel, array axis order.
        origin: physical position of voxel 0 in SimpleITK's (x, y, z) world order.
        direction: SimpleITK's row-major direction cosine matrix (world order).
    """

    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]

    @property
    def dims(self) -> int:
        return len(self.size)

    def differences(self, other: ImageGeometry, atol: float = 1e-4) -> list[str]:
        """Human-readable list of what differs from ``other`` (empty when on the same grid)."""
        out = []
        if self.size != other.size:
            out.append(f"size {self.size} vs {other.size}")
        for name in ("spacing", "origin", "direction"):
            a, b = getattr(self, name), getattr(other, name)
            if len(a) != len(b) or not np.allclose(a, b, atol=atol, rtol=1e-5):
                fmt = lambda v: "(" + ", ".join(f"{x:g}" for x in v) + ")"  # noqa: E731
                out.append(f"{name} {fmt(a)} vs {fmt(b)}")
        return out


def _geometry(image: sitk.Image) -> ImageGeometry:
    return ImageGeometry(
        size=tuple(int(s) for s in reversed(image.GetSize())),
        spacing=tuple(float(s) for s in reversed(image.GetSpacing())),
        origin=tuple(float(o) for o in image.GetOrigin()),
        direction=tuple(float(d) for d in image.GetDirection()),
    )


def _read(path: str | Path) -> sitk.Image:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    _check_nifti(path)
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
        raise DataError(
            f"{path}: cannot read the image (truncated or not a format SimpleITK reads: "
            f"{', '.join(IMAGE_SUFFIXES)}). {first}"
        ) from None


def _gzip_is_complete(path: Path) -> bool:
    """Whether a .gz file's deflate stream runs to its end-of-stream marker (full decode)."""
    decoder = zlib.decompressobj(wbits=31)
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            try:
                decoder.decompress(chunk, 0)
            except zlib.error:
                return False
            while decoder.eof and decoder.unused_data:  # multi-member gzip
                rest = decoder.unused_data
                decoder = zlib.decompressobj(wbits=31)
                decoder.decompress(rest, 0)
    return decoder.eof


def _nifti_header(header: bytes) -> tuple[str, int, int, int] | None:
    """(endian, datatype, bytes of voxel data + offset, vox_offset) of a NIfTI-1 header."""
    for endian in "<>":
        if len(header) >= 348 and struct.unpack(endian + "i", header[:4])[0] == 348:
            dim = struct.unpack(endian + "8h", header[40:56])
            datatype = struct.unpack(endian + "h", header[70:72])[0]
            bitpix = struct.unpack(endian + "h", header[72:74])[0]
            vox_offset = int(struct.unpack(endian + "f", header[108:112])[0])
            if not (0 < dim[0] <= 7 and bitpix > 0):
                return None
            voxels = int(np.prod([max(d, 1) for d in dim[1 : dim[0] + 1]], dtype=np.int64))
            return endian, datatype, vox_offset + voxels * bitpix // 8, vox_offset
    return None


#: NIfTI datatype codes of float32 and float64 voxels
_NIFTI_FLOATS = {16: "f4", 64: "f8"}


def _check_nifti(path: Path) -> None:
    """Checks SimpleITK does not make for NIfTI files.

    ITK silently zero-fills a truncated .nii.gz and silently replaces NaN voxels with 0 when it
    reads NIfTI, so a broken file would become a plausible image.  Integer files of a .nii.gz
    take a fast path (the gzip trailer's size must equal the size the header promises); float
    files are decoded once more to look for NaN and infinity.
    """
    name = path.name.lower()
    if not name.endswith((".nii", ".nii.gz")):
        return
    opener = gzip.open if name.endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:  # type: ignore[operator]
            header = handle.read(348)
    except (OSError, EOFError, zlib.error):
        raise DataError(f"{path}: cannot read the image (not a valid NIfTI file)") from None
    info = _nifti_header(header)
    if info is not None and info[1] in _NIFTI_FLOATS:
        endian, datatype, total, offset = info
        try:
            with opener(path, "rb") as handle:  # type: ignore[operator]
                raw = handle.read()
        except (OSError, EOFError, zlib.error):
            raw = b""
        if len(raw) < total:
            raise DataError(
                f"{path}: the file is truncated (its data ends early); re-export or re-download it"
            )
        values = np.frombuffer(
            raw,
            dtype=endian + _NIFTI_FLOATS[datatype],
            offset=offset,
            count=(total - offset) // np.dtype(_NIFTI_FLOATS[datatype]).itemsize,
        )
        if not np.isfinite(values).all():
            raise DataError(
                f"{path}: contains NaN or infinite intensities; replace them (e.g. with the "
                "image minimum) before running segcli"
            )
        return
    if not name.endswith(".gz"):
        return  # SimpleITK itself refuses a truncated uncompressed file
    with path.open("rb") as handle:
        handle.seek(-4, os.SEEK_END)
        trailer_size = struct.unpack("<I", handle.read(4))[0]
    if info is not None and info[2] % 2**32 == trailer_size:
        return
    if not _gzip_is_complete(path):
        raise DataError(
            f"{path}: the file is truncated (its compressed data ends early); "
            "re-export or re-download it"
        )


def read_geometry(path: str | Path) -> ImageGeometry:
    """Read only the header (fast: no voxel data is decoded)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise DataError(
            f"{path}: cannot read the image header (truncated, or not a format SimpleITK reads: "
            f"{', '.join(IMAGE_SUFFIXES)}); re-export or re-download it"
        ) from None
    size = reader.GetSize()
    return ImageGeometry(
        size=tuple(int(s) for s in reversed(size)),
        spacing=tuple(float(s) for s in reversed(reader.GetSpacing())),
        origin=tuple(float(o) for o in reader.GetOrigin()),
        direction=tuple(float(d) for d in reader.GetDirection()),
    )


def read_image(path: str | Path) -> tuple[npt.NDArray[np.float32], ImageGeometry]:
    """Read one image channel as float32 in array axis order.

    Raises:
        DataError: missing, unreadable, vector-valued, or containing non-finite values.
    """
    image = _read(path)
    hint = "store each channel as its own file (<case>_0000, <case>_0001, ...)"
    return _grey_array(image, f"{path}:", hint), _geometry(image)


def _grey_array(image: sitk.Image, where: str, hint: str) -> npt.NDArray[np.float32]:
    """The float32 voxels of a single-component image with finite values only.

    Raises:
        DataError: ``where`` (the file or folder, with its own wording) and what is wrong.
    """
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(
            f"{where} has {image.GetNumberOfComponentsPerPixel()} components per voxel; {hint}"
        )
    array = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        raise DataError(f"{where} contains NaN or infinite intensities")
    return array


def read_label(path: str | Path) -> tuple[npt.NDArray[np.integer], ImageGeometry]:
    """Read an integer label map (0 = background).

    Raises:
        DataError: unreadable, non-integer values, or negative values.
    """
    image = _read(path)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(f"{path}: a label map must have one component per voxel")
    array = sitk.GetArrayFromImage(image)
    if array.dtype.kind == "f":
        if not np.isfinite(array).all() or not np.array_equal(array, np.round(array)):
            raise DataError(f"{path}: label map has non-integer values; expected integer labels")
        array = array.astype(np.int64)
    elif array.dtype.kind not in "iub":
        raise DataError(f"{path}: label map has pixel type {array.dtype}; expected integers")
    if array.size and array.min() < 0:
        raise DataError(f"{path}: label map has negative values (min {array.min()})")
    if array.dtype.kind == "b":
        array = array.astype(np.uint8)
    return array, _geometry(image)


# --------------------------------------------------------------------------- DICOM series

#: Name endings of DICOM files (many carry none: those are known by their content).
_DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")

#: Slice gaps may differ from the series' typical gap by this share (plus 1 µm) before the
#: series counts as unevenly spaced (a missing slice doubles a gap).
_SLICE_GAP_TOLERANCE = 0.01


def _has_dicom_magic(path: Path) -> bool:
    """Whether ``path`` has the DICOM Part 10 preamble: ``DICM`` at byte 128."""
    try:
        with path.open("rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def is_dicom_file(path: str | Path) -> bool:
    """Whether ``path`` is a file that looks like DICOM (``DICM`` marker or a DICOM name ending)."""
    path = Path(path)
    return path.is_file() and (
        path.name.lower().endswith(_DICOM_SUFFIXES) or _has_dicom_magic(path)
    )


def _folder_files(folder: Path) -> list[Path]:
    """The regular, non-hidden files directly in ``folder``, sorted ([] if unreadable)."""
    try:
        return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    except OSError:
        return []


def _sitk_reason(exc: RuntimeError) -> str:
    """The line of a SimpleITK exception that says what went wrong."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    errors = [line for line in lines if "ERROR" in line]
    return (errors or lines or [""])[-1]


@contextlib.contextmanager
def _keep_locale() -> Iterator[None]:
    """Restore the C library's locale after GDCM, which sets it to "C" — after which Python's
    default text encoding in this process (subprocess output, open()) is ASCII."""
    saved = locale.setlocale(locale.LC_ALL)
    try:
        yield
    finally:
        locale.setlocale(locale.LC_ALL, saved)


@_keep_locale()
def _dicom_series(folder: Path) -> dict[str, tuple[Path, ...]]:
    """Series instance UID → its files in ``folder`` (not recursive), in GDCM's slice order."""
    reader = sitk.ImageSeriesReader
    warnings = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # GDCM's "No Series were found"
    try:
        return {
            uid: tuple(Path(f) for f in reader.GetGDCMSeriesFileNames(str(folder), uid))
            for uid in reader.GetGDCMSeriesIDs(str(folder))
        }
    except RuntimeError as exc:
        raise DataError(
            f"{folder}: cannot scan the folder for DICOM series. {_sitk_reason(exc)}"
        ) from None
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warnings)


def is_dicom_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding DICOM files (directly, not in sub-folders).

    A file with the ``DICM`` marker at byte 128 is enough; otherwise GDCM is asked whether it
    finds a series (DICOM files without the preamble).
    """
    path = Path(path)
    if not path.is_dir():
        return False
    files = _folder_files(path)
    if any(_has_dicom_magic(p) for p in files):
        return True
    if not files:
        return False
    try:
        return bool(_dicom_series(path))
    except DataError:
        return False


def dicom_series_files(folder: str | Path) -> tuple[Path, ...]:
    """The files of the one DICOM series in ``folder``, ordered by slice position (GDCM).

    Raises:
        DataError: the folder is missing, holds no series or several series, or holds DICOM
            files that belong to no series (truncated or damaged files GDCM skipped).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: DICOM series folder not found")
    series = _dicom_series(folder)
    if not series:
        raise DataError(
            f"{folder}: no DICOM series found (no file in the folder reads as a DICOM image)"
        )
    if len(series) > 1:
        listed = "; ".join(f"{uid} ({len(files)} files)" for uid, files in series.items())
        raise DataError(
            f"{folder}: holds {len(series)} DICOM series ({listed}); give --input a folder "
            "with one series (move each series into its own folder)"
        )
    files = next(iter(series.values()))
    listed_names = {p.name for p in files}
    skipped = [
        p.name
        for p in _folder_files(folder)
        if p.name not in listed_names and p.name.upper() != "DICOMDIR" and is_dicom_file(p)
    ]
    if skipped:
        shown = ", ".join(skipped[:5]) + (", ..." if len(skipped) > 5 else "")
        raise DataError(
            f"{folder}: {len(skipped)} DICOM file(s) cannot be read as part of the series "
            f"({shown}): truncated or damaged; re-export the series"
        )
    return files


@_keep_locale()
def _check_slices(folder: Path, files: Sequence[Path]) -> None:
    """Every slice file readable, of one size and orientation, and evenly spaced.

    SimpleITK reads a series with a missing slice without error (the spacing becomes the
    average gap, so every slice after the gap lands in the wrong place); refuse it instead.
    """
    if len(files) < 2:
        return
    reader = sitk.ImageFileReader()
    sizes, origins, directions = [], [], []
    for path in files:
        reader.SetFileName(str(path))
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            raise DataError(
                f"{folder}: cannot read the DICOM file {path.name} (truncated or damaged); "
                "re-export the series"
            ) from None
        sizes.append(tuple(reader.GetSize()))
        origins.append(reader.GetOrigin())
        directions.append(reader.GetDirection())
    for path, size, direction in zip(files, sizes, directions, strict=True):
        if size != sizes[0]:
            raise DataError(
                f"{folder}: the slices differ in size: {path.name} is {size[:2]} but "
                f"{files[0].name} is {sizes[0][:2]} (x, y); the folder must hold one series"
            )
        if not np.allclose(direction, directions[0], atol=1e-4):
            raise DataError(
                f"{folder}: the slices differ in orientation (0020|0037): {path.name} vs "
                f"{files[0].name}; the folder must hold one series"
            )
    if len(sizes[0]) != 3 or sizes[0][2] != 1:
        return  # multi-frame files: SimpleITK places their frames itself
    normal = np.asarray(directions[0], dtype=np.float64).reshape(3, 3)[:, 2]
    gaps = np.diff(np.asarray(origins, dtype=np.float64) @ normal)
    step = float(np.median(gaps))
    for k, gap in enumerate(gaps):
        if abs(gap) < 1e-6 or abs(step) < 1e-6:
            raise DataError(
                f"{folder}: slices {files[k].name} and {files[k + 1].name} lie at the same "
                "position (0020|0032 image position); the folder must hold one series"
            )
        if abs(gap - step) > _SLICE_GAP_TOLERANCE * abs(step) + 1e-3:
            raise DataError(
                f"{folder}: the slices are not evenly spaced: {abs(gap):g} mm between "
                f"{files[k].name} and {files[k + 1].name}, {abs(step):g} mm elsewhere "
                "(a missing slice?); re-export the complete series"
            )


@_keep_locale()
def read_dicom_series(folder: str | Path) -> tuple[npt.NDArray[np.float32], ImageGeometry]:
    """Read the one DICOM series in ``folder`` as float32 ``(z, y, x)`` with its geometry.

    Slices are ordered by position (GDCM's order, not by file name); spacing, origin and
    direction are what SimpleITK derives from the series' image position / orientation and
    pixel spacing tags; the rescale slope / intercept is applied (CT in HU).

    Raises:
        DataError: naming the folder: no series, several series, an unreadable or truncated
            file, slices of different sizes or orientations, a missing slice, a multi-component
            (colour) series, or non-finite values.
    """
    folder = Path(folder)
    files = dicom_series_files(folder)
    _check_slices(folder, files)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(p) for p in files])
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise DataError(
            f"{folder}: cannot read the DICOM series ({len(files)} files; a file is truncated "
            f"or damaged, or the slices differ). {_sitk_reason(exc)}"
        ) from None
    hint = "(colour); segcli reads single-channel (grey-scale) series"
    return _grey_array(image, f"{folder}: the DICOM series", hint), _geometry(image)


# --------------------------------------------------------------------------- grids


def check_same_grid(a: ImageGeometry, b: ImageGeometry, what: str, atol: float = 1e-4) -> None:
    """Raise GeometryError naming ``what`` if ``a`` and ``b`` are not on the same grid."""
    diff = a.differences(b, atol=atol)
    if diff:
        raise GeometryError(f"{what}: geometry differs: {'; '.join(diff)}")


def to_sitk(array: np.ndarray, geometry: ImageGeometry) -> sitk.Image:
    """Array in array axis order + geometry → SimpleITK image."""
    if tuple(array.shape) != tuple(geometry.size):
        raise ValueError(f"array shape {array.shape} does not match geometry size {geometry.size}")
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing(tuple(reversed(geometry.spacing)))
    image.SetOrigin(geometry.origin)
    image.SetDirection(geometry.direction)
    return image


def from_sitk(image: sitk.Image) -> tuple[np.ndarray, ImageGeometry]:
    """SimpleITK image → (array in array axis order, geometry); the inverse of :func:`to_sitk`."""
    return sitk.GetArrayFromImage(image), _geometry(image)


def _direction_matrix(geometry: ImageGeometry) -> np.ndarray:
    dims = geometry.dims
    return np.asarray(geometry.direction, dtype=np.float64).reshape(dims, dims)


def index_to_physical(geometry: ImageGeometry, index: Sequence[float]) -> np.ndarray:
    """Physical (world, SimpleITK's x, y, z order) point of a continuous voxel index.

    Args:
        geometry: the grid.
        index: continuous index in **array axis order** (0 = centre of the first voxel).

    Returns:
        float64 array of ``dims`` world coordinates in mm.
    """
    scaled = np.asarray(index, dtype=np.float64)[::-1] * np.asarray(geometry.spacing)[::-1]
    return np.asarray(geometry.origin, dtype=np.float64) + _direction_matrix(geometry) @ scaled


def physical_to_index(geometry: ImageGeometry, point: Sequence[float]) -> np.ndarray:
    """World point → continuous voxel index (array axis order); undoes :func:`index_to_physical`."""
    offset = np.asarray(point, dtype=np.float64) - np.asarray(geometry.origin, dtype=np.float64)
    scaled = np.linalg.solve(_direction_matrix(geometry), offset)
    return (scaled / np.asarray(geometry.spacing)[::-1])[::-1]


def write_image(
    path: str | Path,
    array: np.ndarray,
    geometry: ImageGeometry,
    compress: bool = True,
) -> Path:
    """Write ``array`` on ``geometry``'s grid, atomically (temp file in the folder + rename).

    Boolean arrays are written as uint8.  Returns the path written.
    """
    path = Path(path)
    array = _compact_dtype(array)
    image = to_sitk(array, geometry)
    suffix = next((s for s in IMAGE_SUFFIXES if path.name.lower().endswith(s)), path.suffix)
    # SimpleITK picks the format from the name: the temp name keeps the image suffix
    with atomic_path(path, f".tmp{suffix}", DataError, "the image") as tmp:
        try:
            sitk.WriteImage(image, str(tmp), compress)
        except RuntimeError as exc:
            raise DataError(f"{path}: cannot write the image ({exc})") from None
    return path


def _compact_dtype(array: np.ndarray) -> np.ndarray:
    """Label maps as the smallest unsigned type that holds them; floats as float32."""
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if array.dtype.kind in "iu" and array.size:
        lo, hi = int(array.min()), int(array.max())
        if lo >= 0:
            for dtype in (np.uint8, np.uint16, np.uint32):
                if hi <= np.iinfo(dtype).max:
                    return array.astype(dtype, copy=False)
        return array.astype(np.int32 if np.iinfo(np.int32).min <= lo else np.int64, copy=False)
    if array.dtype == np.float64:
        return array.astype(np.float32)
    return array


def make_geometry(
    size: Sequence[int],
    spacing: Sequence[float] | None = None,
    origin: Sequence[float] | None = None,
    direction: Sequence[float] | None = None,
) -> ImageGeometry:
    """A geometry from array-order size/spacing (identity direction, zero origin by default)."""
    dims = len(size)
    spacing = tuple(float(s) for s in (spacing or (1.0,) * dims))
    origin = tuple(float(o) for o in (origin or (0.0,) * dims))
    if direction is None:
        direction = tuple(float(v) for v in np.eye(dims).ravel())
    return ImageGeometry(tuple(int(s) for s in size), spacing, origin, tuple(direction))
