"""Checks of the command-line inputs that ``distgan.sample`` and ``distgan.evaluate`` share: each refuses a
value with a message that says what to give instead, before anything is computed or written."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from distgan.errors import DistganError

MAX_IMAGES = 1_000_000  # 784 MB of uint8 images; FID is usually taken on 10k-50k


class InputError(DistganError, ValueError):
    """A command-line value that cannot work; the message says what to give instead."""


def device(name: str) -> torch.device:
    """``--device``: a torch device name this machine has."""
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise InputError(f"--device {name!r} is not a device name; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {name}: this machine has no CUDA GPU; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InputError(f"--device {name}: this machine has {torch.cuda.device_count()} GPU(s)")
    if dev.type not in ("cpu", "cuda"):
        raise InputError(f"--device {name}: distgan runs on cpu or cuda")
    return dev


def count(value: int, flag: str = "--num", least: int = 1) -> int:
    if not least <= value <= MAX_IMAGES:
        raise InputError(f"{flag} must lie in [{least}, {MAX_IMAGES:,}], got {value:,}")
    return value


def run_folder_of(path: Path) -> Path | None:
    """The distgan run folder (its config.yaml, metrics.jsonl and checkpoints/) that ``path`` lies in."""
    for parent in path.resolve().parents:
        if all((parent / f).is_file() for f in ("config.yaml", "metrics.jsonl")) and (parent / "checkpoints").is_dir():
            return parent
    return None


def output(path: str, suffixes: tuple[str, ...]) -> Path:
    """``--out``: a file path with one of ``suffixes``, not a folder, whose parent is (or can become) a
    folder, and outside every run folder (a run's own grids and files are never overwritten)."""
    out = Path(path)
    if out.suffix not in suffixes:
        raise InputError(f"--out {path}: the name must end in {' or '.join(suffixes)}")
    if out.is_dir():
        raise InputError(f"--out {path} is a folder; give a file name inside it, e.g. {out / ('out' + suffixes[0])}")
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise InputError(f"--out {path}: {parent} is a file, not a folder")
    run = run_folder_of(out)
    if run is not None:
        raise InputError(
            f"--out {path} lies inside the run folder {run}, whose files distgan never overwrites; write elsewhere"
        )
    return out


def read_images(path: str, least: int) -> np.ndarray:
    """An ``.npz`` with key ``images``: uint8 (N, 28, 28), ``least <= N <= MAX_IMAGES``. The array's header
    is checked before any of it is read, so a file that claims a huge array costs nothing."""
    if not Path(path).is_file():
        raise InputError(f"cannot read images from {path}: no such file")
    if not zipfile.is_zipfile(path):
        raise InputError(f"{path} is not an .npz archive (np.savez writes one); it needs key 'images'")
    try:
        with zipfile.ZipFile(path) as archive:
            if "images.npy" not in archive.namelist():
                raise InputError(f"{path} has no key 'images' (it holds {sorted(archive.namelist())[:5]})")
            with archive.open("images.npy") as member:
                version = np.lib.format.read_magic(member)
                header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
                if version not in header:
                    raise InputError(f"{path}: 'images' is an .npy of version {version}; save it with numpy's np.savez")
                shape, _, dtype = header[version](member)  # the header only
            if dtype != np.uint8 or len(shape) != 3 or tuple(shape[1:]) != (28, 28):
                raise InputError(f"{path}: expected uint8 images (N, 28, 28), got {tuple(shape)} {dtype}")
            if not least <= shape[0] <= MAX_IMAGES:
                raise InputError(f"{path}: {shape[0]:,} images; give between {least} and {MAX_IMAGES:,}")
        with np.load(path, allow_pickle=False) as npz:
            return npz["images"]
    except InputError:
        raise
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
        raise InputError(f"cannot read images from {path} ({e}); it needs key 'images'") from None
