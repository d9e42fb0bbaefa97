"""Checkpoints: safetensors weights plus JSON, written atomically; loading never unpickles anything.

Layout of a run folder's ``checkpoints/``::

    epoch-003/model.safetensors   G.* and D.* tensors; metadata holds the resolved config and counters
    epoch-003/state.json          the same config and counters, readable without any library
    latest                        the name of the newest complete checkpoint

A checkpoint is written under a hidden temporary name, fsynced, then renamed, so a crash mid-save
leaves the previous one valid. ``model.safetensors`` alone is enough to rebuild G (``distgan.sample``).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import safetensors
import torch
from safetensors.torch import save_file
from torch import nn

MODEL_FILE = "model.safetensors"
STATE_FILE = "state.json"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or not distgan's; the message says what to do."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def state_tensors(**modules: nn.Module) -> dict[str, torch.Tensor]:
    """{'G.net.0.weight': ..., 'D....': ...} as contiguous CPU tensors."""
    return {
        f"{prefix}.{k}": v.detach().to("cpu").contiguous()
        for prefix, module in modules.items()
        for k, v in module.state_dict().items()
    }


def save(ckpt_dir: Path, tag: str, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> Path:
    """Write ``ckpt_dir/tag`` atomically and point ``ckpt_dir/latest`` at it; return its folder."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    final, tmp = ckpt_dir / tag, ckpt_dir / f".{tag}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    metadata = {"format": "pt", **{k: json.dumps(v) for k, v in info.items()}}
    save_file(tensors, tmp / MODEL_FILE, metadata=metadata)
    with open(tmp / STATE_FILE, "w") as f:
        json.dump(info, f, indent=2)
    for name in (MODEL_FILE, STATE_FILE):
        with open(tmp / name, "rb") as f:
            os.fsync(f.fileno())
    _fsync_dir(tmp)
    if final.exists():  # re-saving a tag (e.g. after a resume): swap, then drop the old copy
        old = ckpt_dir / f".{tag}.old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old)
    else:
        os.replace(tmp, final)
    pointer = ckpt_dir / ".latest.tmp"
    with open(pointer, "w") as f:
        f.write(tag + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(pointer, ckpt_dir / "latest")
    _fsync_dir(ckpt_dir)
    return final


def resolve(path: str | Path) -> Path:
    """A run folder, a checkpoint folder or a model.safetensors file -> the model.safetensors path."""
    path = Path(path)
    if path.is_file():
        return path
    if (path / MODEL_FILE).is_file():
        return path / MODEL_FILE
    latest = path / "checkpoints" / "latest"
    if latest.is_file():
        target = path / "checkpoints" / latest.read_text().strip() / MODEL_FILE
        if target.is_file():
            return target
        raise CheckpointError(f"{latest} points to a missing checkpoint ({target}); pass a checkpoint folder instead")
    raise CheckpointError(
        f"no checkpoint at {path}: pass a run folder (with checkpoints/latest), a checkpoint folder, "
        f"or a {MODEL_FILE} file"
    )


def load(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, info) from a checkpoint; info holds 'config' and 'counters'. No pickle involved."""
    file = resolve(path)
    try:
        with safetensors.safe_open(str(file), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except Exception as e:  # safetensors raises its own SafetensorError for bad headers / truncation
        raise CheckpointError(f"{file} is not a readable safetensors file ({e}); it may be truncated") from None
    if "config" not in metadata:
        raise CheckpointError(f"{file} is a safetensors file but not a distgan checkpoint (no config in its metadata)")
    try:
        info = {k: json.loads(v) for k, v in metadata.items() if k != "format"}
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{file}: its distgan metadata is not valid JSON ({e})") from None
    return tensors, info


def module_state(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The state_dict of one network ('G' or 'D') out of a checkpoint's flat tensors."""
    cut = len(prefix) + 1
    return {k[cut:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
