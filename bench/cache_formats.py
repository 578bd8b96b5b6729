"""Pick the on-disk format of the preprocessing cache by measurement.

    .venv/bin/python bench/cache_formats.py [--cases 3] [--quick]

Synthetic CT-like cases (float32 image ``(1, 130, 460, 460)`` in HU, uint8 label ``(130, 460,
460)``) are written in each candidate format into a temporary directory under /tmp, which is
removed at the end.  For each format the script measures

* write time per case (image + label, page cache only, no fsync),
* bytes per case (apparent file sizes, image + label),
* time to read one random 56x192x192 patch of image *and* label (median / p90 over ``--reads``
  reads, the file opened per read, page cache warm),
* time to read a whole case (image + label) into memory,
* the same patch timing for small MRI-like crops (32x48x32 patches of 36x50x35 volumes),

and, in child processes, how much the reading process' RSS grows while reading 200 patches
(memory-mapped pages that were touched count in RSS while the map is open).

Candidates: ``npy`` read through ``np.load(mmap_mode="r")`` (open, slice-copy, drop the map per
read); ``npy+pread`` (the same file, one ``os.preadv`` per z-slice of full-width rows, then the
x-window copied out); blosc2 NDArray (chunk/block shapes derived from the patch size the way
nnU-Net v2 does it: blocks of <= 128 KiB, chunks grown block by block towards 1.5x the patch and
<= 6 MiB, SHUFFLE vs NOFILTER chosen by trial compression, clevel 8) with ZSTD and LZ4HC; zarr v3
with 64^3 chunks and zarr's default compressor.  All codecs run single-threaded, as DataLoader
workers do.  Cold-cache reads are out of scope (they need dropping the page cache, i.e. root).

Needs the bench extras ``blosc2`` and ``zarr`` (the rows are skipped when one is missing).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
from _harness import (
    child_json,
    cpu_model,
    doc_options,
    machine,
    proc_status_mib,
    publish,
    row,
    scratch,
    table,
)
from scipy import ndimage

try:
    import blosc2
except ImportError:  # pragma: no cover - optional
    blosc2 = None
try:
    import zarr
except ImportError:  # pragma: no cover - optional
    zarr = None

CT_SHAPE = (130, 460, 460)
CT_PATCH = (56, 192, 192)
MRI_SHAPE = (36, 50, 35)
MRI_PATCH = (32, 48, 32)
ZARR_CHUNK = 64
CLEVEL = 8


# --------------------------------------------------------------------------- synthetic data


def _ellipsoid(img, lab, center, radii, value, label, rng, noise=0.0):
    """Paint an axis-aligned ellipsoid (voxel units) into img/lab, touching only its bbox."""
    lo = [max(0, int(math.floor(c - r))) for c, r in zip(center, radii, strict=True)]
    hi = [
        min(s, int(math.ceil(c + r)) + 1) for c, r, s in zip(center, radii, img.shape, strict=True)
    ]
    if any(h <= lo_i for lo_i, h in zip(lo, hi, strict=True)):
        return
    g = np.ogrid[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    d = sum(((gi - c) / r) ** 2 for gi, c, r in zip(g, center, radii, strict=True))
    m = d < 1.0
    sub = img[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    sub[m] = value + (rng.normal(0, noise) if noise else 0.0)
    if label:
        lab[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]][m] = label


def _smooth_profile(n, rng, knots=6):
    """A smooth random 1-D profile in [0, 1] of length n."""
    k = rng.uniform(0, 1, knots)
    return np.interp(np.linspace(0, knots - 1, n), np.arange(knots), k).astype(np.float32)


def make_case(shape, rng):
    """CT-like float32 image (1, Z, Y, X) in HU and uint8 label (Z, Y, X).

    Air -1000 outside a body ellipse; inside, soft tissue whose mean varies smoothly in
    -50..60 HU; lungs (-850), organ ellipsoids (liver, spleen, kidneys, bladder: labels 1-4)
    with their own mean HU, a spine and two femoral heads at ~700 HU.  Gaussian noise
    (sigma 20 HU) everywhere, then gaussian_filter(sigma=1) -> full-mantissa floats, the way
    cubic resampling of int16 CT looks.
    """
    Z, Y, X = shape
    img = np.full(shape, -1000.0, np.float32)
    lab = np.zeros(shape, np.uint8)
    cy, cx = Y / 2, X / 2
    ry, rx = 0.36 * Y, 0.46 * X
    zz = np.arange(Z, dtype=np.float32)[:, None, None]
    yy = np.arange(Y, dtype=np.float32)[None, :, None]
    xx = np.arange(X, dtype=np.float32)[None, None, :]
    wobble = 1.0 + 0.06 * np.sin(zz / Z * 2 * np.pi * rng.uniform(0.5, 1.5))
    body = ((yy - cy) / (ry * wobble)) ** 2 + ((xx - cx) / (rx * wobble)) ** 2 < 1.0
    tissue = (
        _smooth_profile(Z, rng)[:, None, None]
        + _smooth_profile(Y, rng)[None, :, None]
        + _smooth_profile(X, rng)[None, None, :]
    ) / 3.0 * 110.0 - 50.0  # -50 .. 60 HU
    np.copyto(img, np.broadcast_to(tissue, shape), where=body)
    del body, tissue
    s = np.array(shape, np.float32)
    j = lambda: rng.uniform(0.9, 1.1)  # noqa: E731
    # lungs (upper third), no label
    for side in (-1, 1):
        _ellipsoid(
            img,
            lab,
            (0.12 * Z, cy - 0.05 * Y, cx + side * 0.2 * X),
            (0.25 * Z * j(), 0.22 * Y * j(), 0.15 * X * j()),
            -850.0,
            0,
            rng,
            30,
        )
    organs = [  # center (frac), radii (frac), HU, label
        ((0.45, 0.45, 0.35), (0.18, 0.16, 0.16), 105.0, 1),  # liver (contrast)
        ((0.42, 0.55, 0.70), (0.10, 0.07, 0.06), 120.0, 2),  # spleen
        ((0.55, 0.62, 0.38), (0.08, 0.05, 0.04), 160.0, 3),  # kidney R
        ((0.55, 0.62, 0.62), (0.08, 0.05, 0.04), 160.0, 3),  # kidney L
        ((0.88, 0.45, 0.50), (0.07, 0.08, 0.08), 8.0, 4),  # bladder
    ]
    for c, r, hu, lbl in organs:
        _ellipsoid(
            img,
            lab,
            tuple(ci * si for ci, si in zip(c, s, strict=True)),
            tuple(ri * si * j() for ri, si in zip(r, s, strict=True)),
            hu,
            lbl,
            rng,
            10,
        )
    # bones ~700 HU: spine (elliptic cylinder along z) and femoral heads
    _ellipsoid(img, lab, (0.5 * Z, 0.78 * Y, cx), (0.75 * Z, 0.05 * Y, 0.04 * X), 700.0, 0, rng, 40)
    for side in (-1, 1):
        _ellipsoid(
            img,
            lab,
            (0.95 * Z, 0.5 * Y, cx + side * 0.25 * X),
            (0.06 * Z, 0.05 * Y, 0.05 * X),
            700.0,
            0,
            rng,
            40,
        )
    img += rng.standard_normal(shape, dtype=np.float32) * np.float32(20.0)
    img = ndimage.gaussian_filter(img, sigma=1.0, output=np.float32)
    return img[None], lab


# --------------------------------------------------------------------------- blosc2 params


def blosc2_shapes(
    img_shape, patch, itemsize, block_cap=128 * 1024, chunk_cap=6 * 1024**2, ratio=1.5
):
    """Block and chunk shapes for a (C, Z, Y, X) array, following nnU-Net v2's idea.

    Blocks start at the patch rounded up to powers of two (clipped to the image) and the axis
    that is largest relative to the target extent (min(image, 1.5 * patch)) is halved until the
    block is <= block_cap bytes.  Chunks start at one block and grow one block step at a time
    along the least-covered axis until the target extent or chunk_cap bytes is reached.
    """
    spatial = tuple(int(v) for v in img_shape[1:])
    target = [max(1, min(s, int(ratio * p))) for s, p in zip(spatial, patch, strict=True)]

    def nbytes(shp):
        return math.prod(shp) * itemsize

    def pow2_up(n):
        return 1 << max(0, (int(n) - 1).bit_length())

    def pow2_below(n):
        return 1 << max(0, (int(n) - 1).bit_length() - 1) if n > 1 else 1

    block = [min(pow2_up(p), s) for p, s in zip(patch, spatial, strict=True)]
    while nbytes(block) > block_cap:
        axes = [a for a in range(3) if block[a] > 1]
        a = max(axes, key=lambda a: (block[a] / target[a], a))
        block[a] = pow2_below(block[a])
    chunk = list(block)
    while True:
        best = None
        for a in range(3):
            limit = min(spatial[a], target[a])
            if chunk[a] >= limit:
                continue
            cand = list(chunk)
            cand[a] = min(chunk[a] + block[a], limit)
            if nbytes(cand) > chunk_cap:
                continue
            key = (chunk[a] / target[a], -spatial[a], a)
            if best is None or key < best[0]:
                best = (key, cand)
        if best is None:
            break
        chunk = best[1]
    return (1, *block), (1, *chunk)


def _blosc2_filter(arr, chunks, blocks, codec):
    """SHUFFLE or NOFILTER, whichever compresses a central chunk-sized slab smaller."""
    sl = tuple(
        slice((n - min(c, n)) // 2, (n - min(c, n)) // 2 + min(c, n))
        for n, c in zip(arr.shape, chunks, strict=True)
    )
    slab = np.ascontiguousarray(arr[sl])
    tb = tuple(min(b, n) for b, n in zip(blocks, slab.shape, strict=True))
    best = None
    for f in (blosc2.Filter.NOFILTER, blosc2.Filter.SHUFFLE):
        cp = blosc2.CParams(codec=codec, clevel=CLEVEL, filters=[f], nthreads=1)
        nb = blosc2.asarray(slab, chunks=slab.shape, blocks=tb, cparams=cp).schunk.cbytes
        if best is None or nb < best[0]:
            best = (nb, f)
    return best[1]


# --------------------------------------------------------------------------- formats


def _sizes(paths):
    total = 0
    for p in paths:
        p = Path(p)
        if p.is_dir():
            total += sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
        else:
            total += p.stat().st_size
    return total


def _as4d(lab):
    return lab[None]


class Npy:
    name = "npy, np.load(mmap_mode='r') per read"
    tag = "npy"

    def __init__(self, patch):
        self.patch = patch

    def write(self, base, img, lab):
        np.save(base + "_img.npy", img)
        np.save(base + "_lab.npy", _as4d(lab))
        return [base + "_img.npy", base + "_lab.npy"]

    def read_patch(self, base, start, size):
        sl = (slice(None),) + tuple(slice(s, s + n) for s, n in zip(start, size, strict=True))
        out = []
        for suffix in ("_img.npy", "_lab.npy"):
            m = np.load(base + suffix, mmap_mode="r")
            out.append(np.array(m[sl]))
            del m
        return out

    def read_all(self, base):
        return [np.load(base + "_img.npy"), np.load(base + "_lab.npy")]


class NpyPread(Npy):
    name = "npy, os.preadv per z-slice (same file)"
    _hdr: dict = {}

    def write(self, base, img, lab):  # same files as Npy; written once
        return [base + "_img.npy", base + "_lab.npy"]

    @classmethod
    def header(cls, path):
        h = cls._hdr.get(path)
        if h is None:
            with open(path, "rb") as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                else:
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
                assert not fortran
                h = cls._hdr[path] = (shape, np.dtype(dtype), f.tell())
        return h

    @classmethod
    def pread_patch(cls, path, start, size):
        (C, Z, Y, X), dtype, off0 = cls.header(path)
        z0, y0, x0 = start
        pz, py, px = size
        it = dtype.itemsize
        buf = np.empty((C, pz, py, X), dtype)
        row_bytes = py * X * it
        fd = os.open(path, os.O_RDONLY)
        try:
            for c in range(C):
                for i in range(pz):
                    off = off0 + (((c * Z + z0 + i) * Y + y0) * X) * it
                    n = os.preadv(fd, [memoryview(buf[c, i]).cast("B")], off)
                    assert n == row_bytes
        finally:
            os.close(fd)
        return buf if px == X else np.ascontiguousarray(buf[..., x0 : x0 + px])

    def read_patch(self, base, start, size):
        return [self.pread_patch(base + s, start, size) for s in ("_img.npy", "_lab.npy")]

    def read_all(self, base):
        out = []
        for s in ("_img.npy", "_lab.npy"):
            shape, dtype, off = self.header(base + s)
            a = np.empty(shape, dtype)
            with open(base + s, "rb", buffering=0) as f:
                f.seek(off)
                f.readinto(memoryview(a).cast("B"))
            out.append(a)
        return out


class Blosc2:
    def __init__(self, patch, codec):
        self.patch = patch
        self.codec = codec
        self.name = f"blosc2 NDArray, {codec.name} clevel {CLEVEL}"
        self.tag = f"b2{codec.name}"
        self.params = {}

    def write(self, base, img, lab):
        paths = []
        for suffix, arr in (("_img.b2nd", img), ("_lab.b2nd", _as4d(lab))):
            blocks, chunks = blosc2_shapes(arr.shape, self.patch, arr.itemsize)
            f = _blosc2_filter(arr, chunks, blocks, self.codec)
            self.params[suffix] = (chunks, blocks, f.name)
            cp = blosc2.CParams(codec=self.codec, clevel=CLEVEL, filters=[f], nthreads=1)
            blosc2.asarray(
                np.ascontiguousarray(arr),
                urlpath=base + suffix,
                mode="w",
                chunks=chunks,
                blocks=blocks,
                cparams=cp,
            )
            paths.append(base + suffix)
        return paths

    def _open(self, path):
        return blosc2.open(path, mode="r", mmap_mode="r", dparams=blosc2.DParams(nthreads=1))

    def read_patch(self, base, start, size):
        sl = (slice(None),) + tuple(slice(s, s + n) for s, n in zip(start, size, strict=True))
        out = []
        for suffix in ("_img.b2nd", "_lab.b2nd"):
            a = self._open(base + suffix)
            out.append(a[sl])
            del a
        return out

    def read_all(self, base):
        return [self._open(base + s)[...] for s in ("_img.b2nd", "_lab.b2nd")]


class Zarr:
    def __init__(self, patch):
        self.patch = patch
        self.name = f"zarr v3, chunks {ZARR_CHUNK}^3, default compressor"
        self.codec = None
        self.tag = "zarr"

    def write(self, base, img, lab):
        paths = []
        for suffix, arr in (("_img.zarr", img), ("_lab.zarr", _as4d(lab))):
            z = zarr.create_array(
                store=base + suffix,
                shape=arr.shape,
                dtype=arr.dtype,
                chunks=(1, ZARR_CHUNK, ZARR_CHUNK, ZARR_CHUNK),
                overwrite=True,
            )
            z[...] = arr
            self.codec = z.compressors
            paths.append(base + suffix)
        return paths

    def read_patch(self, base, start, size):
        sl = (slice(None),) + tuple(slice(s, s + n) for s, n in zip(start, size, strict=True))
        return [zarr.open_array(base + s, mode="r")[sl] for s in ("_img.zarr", "_lab.zarr")]

    def read_all(self, base):
        return [zarr.open_array(base + s, mode="r")[...] for s in ("_img.zarr", "_lab.zarr")]


# --------------------------------------------------------------------------- measuring


def _warm(paths):
    for p in paths:
        p = Path(p)
        for f in p.rglob("*") if p.is_dir() else [p]:
            if f.is_file():
                with open(f, "rb", buffering=0) as fh:
                    while fh.read(1 << 24):
                        pass


def _random_starts(rng, shape, size, n, ncases):
    return [
        (
            int(rng.integers(ncases)),
            tuple(int(rng.integers(0, s - p + 1)) for s, p in zip(shape, size, strict=True)),
        )
        for _ in range(n)
    ]


def _time_patches(fmt, bases, shape, size, n, seed, check=None):
    rng = np.random.default_rng(seed)
    draws = _random_starts(rng, shape, size, n, len(bases))
    fmt.read_patch(bases[0], draws[0][1], size)  # warm up imports / code paths
    ts = []
    for ci, start in draws:
        t = time.perf_counter()
        img, lab = fmt.read_patch(bases[ci], start, size)
        ts.append(time.perf_counter() - t)
        assert img.shape == (1, *size) and lab.shape == (1, *size)
        if check is not None:
            ref_img, ref_lab = check(ci, start)
            assert np.array_equal(img, ref_img) and np.array_equal(lab, ref_lab), fmt.name
    ts = np.array(ts) * 1e3
    return float(np.median(ts)), float(np.percentile(ts, 90))


def rss_child(mode, bases, n):
    """Run in a fresh process: read n random CT patches, report RSS numbers (MiB)."""
    if blosc2 is not None:
        blosc2.set_nthreads(1)
    rng = np.random.default_rng(7)
    draws = _random_starts(rng, CT_SHAPE, CT_PATCH, n, len(bases))
    fields = ("VmRSS", "VmHWM", "RssAnon", "RssFile")
    before = proc_status_mib(*fields)
    keep = []
    if mode == "npy-mmap-kept-open":
        maps = [
            (np.load(b + "_img.npy", mmap_mode="r"), np.load(b + "_lab.npy", mmap_mode="r"))
            for b in bases
        ]
        for ci, st in draws:
            sl = (slice(None),) + tuple(slice(s, s + p) for s, p in zip(st, CT_PATCH, strict=True))
            keep = [np.array(maps[ci][0][sl]), np.array(maps[ci][1][sl])]
        during = proc_status_mib(*fields)  # maps still open
    else:
        fmt = {
            "npy-mmap-per-read": Npy(CT_PATCH),
            "npy-pread": NpyPread(CT_PATCH),
            "blosc2-per-read": Blosc2(CT_PATCH, blosc2.Codec.ZSTD) if blosc2 else None,
        }[mode]
        for ci, st in draws:
            keep = fmt.read_patch(bases[ci], st, CT_PATCH)
        during = proc_status_mib(*fields)
    del keep
    peak_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"before": before, "after": during, "ru_maxrss": peak_self}


# --------------------------------------------------------------------------- main


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="fewer reads (20 instead of 50)")
    ap.add_argument("--reads", type=int, default=None, help="patch reads per format")
    ap.add_argument("--rss-reads", type=int, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the temp directory")
    doc_options(ap)
    ap.add_argument("--rss-child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.rss_child:
        mode, n, *bases = args.rss_child
        print(json.dumps(rss_child(mode, bases, int(n))))
        return 0

    reads = args.reads or (20 if args.quick else 50)
    rss_reads = args.rss_reads or (100 if args.quick else 200)
    if blosc2 is not None:
        blosc2.set_nthreads(1)
    if zarr is not None:
        zarr.config.set({"threading.max_workers": 1})

    def formats(patch):
        fs = [Npy(patch), NpyPread(patch)]
        if blosc2 is not None:
            fs += [Blosc2(patch, blosc2.Codec.ZSTD), Blosc2(patch, blosc2.Codec.LZ4HC)]
        if zarr is not None:
            fs.append(Zarr(patch))
        return fs

    command = "python bench/cache_formats.py " + " ".join(
        [f"--cases {args.cases}"]
        + (["--quick"] if args.quick else [])
        + ([f"--reads {args.reads}"] if args.reads else [])
        + ([f"--rss-reads {args.rss_reads}"] if args.rss_reads else [])
    )
    t_start = time.perf_counter()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    with scratch("segcli-cache-bench-", parent="/tmp", keep=args.keep) as folder:
        tmp = str(folder)
        rng = np.random.default_rng(0)
        ct = formats(CT_PATCH)
        res = {f.name: {"write": [], "bytes": [], "img_bytes": [], "whole": []} for f in ct}
        bases = {f.name: [] for f in ct}
        gen_t = []
        for i in range(args.cases):
            t = time.perf_counter()
            img, lab = make_case(CT_SHAPE, rng)
            gen_t.append(time.perf_counter() - t)
            for f in ct:
                base = os.path.join(tmp, f"{f.tag}_ct{i}")
                if isinstance(f, NpyPread):
                    base = bases[ct[0].name][i]
                t = time.perf_counter()
                paths = f.write(base, img, lab)
                dt = time.perf_counter() - t
                bases[f.name].append(base)
                res[f.name]["write"].append(dt if not isinstance(f, NpyPread) else float("nan"))
                res[f.name]["bytes"].append(_sizes(paths))
                res[f.name]["img_bytes"].append(_sizes(paths[:1]))
            if i == 0:
                stats = dict(
                    min=float(img.min()),
                    max=float(img.max()),
                    body_mean=float(img[0, 65, 230, 100:360].mean()),
                    labels=np.unique(lab).tolist(),
                    uniq=int(np.unique(img[0, 60:64, 200:260, 200:260]).size),
                )
            del img, lab

        # correctness of each reader against np.load on one case, then warm page cache
        ref = {}
        npy_bases = bases[ct[0].name]

        def check(ci, start):
            if ci not in ref:
                ref[ci] = Npy(CT_PATCH).read_all(npy_bases[ci])
            sl = (slice(None),) + tuple(
                slice(s, s + p) for s, p in zip(start, CT_PATCH, strict=True)
            )
            return ref[ci][0][sl], ref[ci][1][sl]

        for f in ct:
            for b in bases[f.name]:
                _warm([p for p in Path(tmp).glob(Path(b).name + "_*")])
            _time_patches(f, bases[f.name], CT_SHAPE, CT_PATCH, 3, seed=99, check=check)
        ref.clear()

        for f in ct:
            for b in bases[f.name]:
                t = time.perf_counter()
                f.read_all(b)
                res[f.name]["whole"].append(time.perf_counter() - t)
            res[f.name]["patch"] = _time_patches(
                f, bases[f.name], CT_SHAPE, CT_PATCH, reads, seed=1
            )

        # small MRI-like crops
        mri = formats(MRI_PATCH)
        mri_bases = {f.name: [] for f in mri}
        mrng = np.random.default_rng(1)
        n_mri = 8
        for i in range(n_mri):
            img, lab = make_case(MRI_SHAPE, mrng)
            img = (img - img.mean()) / img.std()
            for f in mri:
                base = os.path.join(tmp, f"{f.tag}_mr{i}")
                if isinstance(f, NpyPread):
                    base = mri_bases[mri[0].name][i]
                f.write(base, img.astype(np.float32), lab)
                mri_bases[f.name].append(base)
        mri_res = {
            f.name: _time_patches(f, mri_bases[f.name], MRI_SHAPE, MRI_PATCH, reads * 2, seed=2)
            for f in mri
        }

        # RSS growth of a reading process (fresh child per mode)
        rss = {}
        modes = ["npy-mmap-kept-open", "npy-mmap-per-read", "npy-pread"]
        if blosc2 is not None:
            modes.append("blosc2-per-read")
        for mode in modes:
            b = npy_bases if mode.startswith("npy") else bases[ct[2].name]
            rss[mode] = child_json(__file__, "--rss-child", mode, rss_reads, *b)
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu_ch = resource.getrusage(resource.RUSAGE_CHILDREN)

    # ------------------------------------------------------------------ report
    mb = 1e6
    out: list[str] = []

    def say(text: str = "") -> None:
        out.append(text)

    load_end = os.getloadavg()[0]
    busy = load_end > 0.5 * (os.cpu_count() or 1)
    say("## Preprocessing-cache formats (`bench/cache_formats.py`)")
    say()
    say(f"Command: `{command}`, {datetime.date.today().isoformat()}.  ")
    say(f"Machine: {machine()}.")
    say()
    say(
        f"{args.cases} CT-like cases, {reads} patch reads per format, page cache warm.  "
        f"CPU: {cpu_model()} ({os.cpu_count()} cores visible"
        + (
            f"; load {load_end:.2f} at the end, a busy machine: timings are indicative, "
            "compare rows, not absolute values)"
            if busy
            else ")"
        )
        + ".  "
    )
    say(
        f"load average at end: {load_end:.2f}; python {platform.python_version()}, "
        f"numpy {np.__version__}, blosc2 {getattr(blosc2, '__version__', '-')}, "
        f"zarr {getattr(zarr, '__version__', '-')}; all codecs single-threaded.  "
    )
    say(
        f"case: image float32 (1, {', '.join(map(str, CT_SHAPE))}) = "
        f"{4 * math.prod(CT_SHAPE) / mb:.0f} MB raw, "
        f"label uint8 = {math.prod(CT_SHAPE) / mb:.1f} MB;"
        f" HU {stats['min']:.0f}..{stats['max']:.0f}, labels {stats['labels']}, "
        f"{stats['uniq']}/14400 distinct floats in a 4x60x60 slab; "
        f"generation {np.mean(gen_t):.1f} s/case\n"
    )
    say(f"CT patch {'x'.join(map(str, CT_PATCH))} (image + label, file(s) opened per read):\n")
    out += table(
        ["format", "write s/case", "MB/case image+label", "patch read median ms", "p90 ms"]
        + ["whole-case read s"],
        align="lrrrrr",
    )
    for f in ct:
        r = res[f.name]
        w = "(same file)" if isinstance(f, NpyPread) else f"{np.mean(r['write']):.2f}"
        tot, im = np.mean(r["bytes"]) / mb, np.mean(r["img_bytes"]) / mb
        size = f"{tot:.1f} ({im:.1f} + {tot - im:.2f})"
        times = (f"{r['patch'][0]:.1f}", f"{r['patch'][1]:.1f}", f"{np.mean(r['whole']):.2f}")
        say(row(f.name, w, size, *times))
    say()
    for f in ct:
        if isinstance(f, Blosc2):
            for s, (c, b, flt) in f.params.items():
                say(f"- {f.name} {s[1:4]}: chunks {c}, blocks {b}, filter {flt}")
        if isinstance(f, Zarr):
            say(f"- zarr compressors: {f.codec}")
    say(
        f"\nMRI-like crop: patch {'x'.join(map(str, MRI_PATCH))} of "
        f"{'x'.join(map(str, MRI_SHAPE))} volumes ({n_mri} cases, {reads * 2} reads):\n"
    )
    out += table(["format", "patch read median ms", "p90 ms"], align="lrr")
    for f in mri:
        say(row(f.name, f"{mri_res[f.name][0]:.2f}", f"{mri_res[f.name][1]:.2f}"))
    say(
        f"\nRSS of a fresh reading process, {rss_reads} random CT patches over "
        f"{args.cases} cases (MiB; VmRSS = RssAnon + RssFile + shmem):\n"
    )
    out += table(
        ["reader", "VmRSS before", "VmRSS after", "RssFile after", "VmHWM (peak)", "peak growth"],
        align="lrrrrr",
    )
    for mode, r in rss.items():
        b, a = r["before"], r["after"]
        figures = (b["VmRSS"], a["VmRSS"], a["RssFile"], a["VmHWM"], a["VmHWM"] - b["VmRSS"])
        say(row(mode, *(f"{v:.0f}" for v in figures)))
    cpu = (
        cpu1.ru_utime
        + cpu1.ru_stime
        - cpu0.ru_utime
        - cpu0.ru_stime
        + cpu_ch.ru_utime
        + cpu_ch.ru_stime
    )
    say(
        f"\nwall {time.perf_counter() - t_start:.0f} s, CPU {cpu:.0f} s; cold-cache reads are "
        f"out of scope (would need dropping the page cache as root); temp dir removed: "
        f"{not Path(tmp).exists()}"
    )
    publish(args, "cache-formats", "\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
