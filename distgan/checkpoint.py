"""Checkpoints: safetensors weights plus JSON, written atomically; loading never unpickles anything.

Layout of a run folder's ``checkpoints/``::

    epoch-003/model.safetensors   G.*, D.* and G_ema.* tensors; metadata holds the resolved config and counters
    epoch-003/train.safetensors   what exact resumption needs besides: both optimizers' tensors, every
                                  rank's RNG states (structure and scalars in state.json)
    epoch-003/state.json          config, counters, optimizer structure, scaler, versions: plain JSON, and the
                                  SHA-256 of both tensor files
    latest                        the name of the newest complete checkpoint
    best                          the name of the checkpoint with the lowest FID (when evaluated)

A checkpoint is written under a hidden temporary name, fsynced, then renamed, so a crash mid-save
leaves the previous one valid; older checkpoints are pruned only after the new one is complete.
``model.safetensors`` alone is enough to rebuild G (``distgan.sample``). Nothing is ever unpickled.

Integrity: ``state.json`` records the SHA-256 of ``model.safetensors`` and ``train.safetensors``, and the
model file's metadata records the SHA-256 of everything else in ``state.json`` (counters, config, optimizer
structure): a checkpoint whose files were altered, replaced or mixed with another's after saving is refused
(:func:`verify`) by resume, sample and evaluate. Pointers (``latest``, ``best``) hold a tag name and
nothing else, and a tag is a real folder inside its run's ``checkpoints/`` (:func:`tag_folder`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import safetensors
import torch
from safetensors.torch import save as safetensors_bytes
from torch import nn

from distgan.errors import CheckpointError
from distgan.files import write_atomic

MODEL_FILE = "model.safetensors"
TRAIN_FILE = "train.safetensors"
STATE_FILE = "state.json"
TAG = re.compile(r"^(epoch-\d{3,}|step-\d{6,})$")


def state_tensors(**modules: nn.Module) -> dict[str, torch.Tensor]:
    """{'G.net.0.weight': ..., 'D....': ...} as contiguous CPU tensors."""
    return {
        f"{prefix}.{k}": v.detach().to("cpu").contiguous()
        for prefix, module in modules.items()
        for k, v in module.state_dict().items()
    }


def save_file(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> str:
    """A safetensors file through distgan's atomic writer; returns its SHA-256. (safetensors' own
    ``save_file`` turns a full disk into a ``SafetensorError``; written from Python it stays
    ``OSError(ENOSPC)``, which save() explains.)"""
    data = safetensors_bytes(tensors, metadata=metadata)
    write_atomic(path, data)
    return hashlib.sha256(data).hexdigest()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _state_digest(state: dict) -> str:
    """SHA-256 of state.json's content but its file digests, in a canonical JSON form."""
    body = {k: v for k, v in state.items() if k != "digests"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _write_pointer(ckpt_dir: Path, name: str, tag: str) -> None:
    write_atomic(ckpt_dir / name, tag + "\n")


def read_pointer(ckpt_dir: Path, name: str) -> str | None:
    """The tag a pointer file (``latest``, ``best``) names; None when there is none. CheckpointError for a
    pointer that is a symlink or holds anything but a tag name (a path would lead out of the run)."""
    path = ckpt_dir / name
    if path.is_symlink():
        raise CheckpointError(f"{path} is a symlink; a checkpoint pointer is a file holding a tag name: delete it")
    try:
        tag = path.read_text(errors="replace").strip()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror or e}") from None
    if not tag:
        return None
    if not TAG.match(tag):
        raise CheckpointError(
            f"{path} holds {tag[:80]!r}, not a checkpoint name (epoch-NNN or step-NNNNNN): it was edited; write the "
            f"name of a checkpoint folder of this run into it, or resume from a checkpoint folder"
        )
    return tag


def tag_folder(ckpt_dir: Path, tag: str) -> Path:
    """``ckpt_dir/tag``, refused unless it is a real folder (no symlink) inside ``ckpt_dir``."""
    folder = ckpt_dir / tag
    if folder.is_symlink() or (folder.exists() and folder.resolve().parent != ckpt_dir.resolve()):
        raise CheckpointError(f"{folder} is a link out of its run's checkpoints/; checkpoints are real folders there")
    return folder


def save(
    ckpt_dir: Path,
    tag: str,
    tensors: dict[str, torch.Tensor],
    info: dict[str, Any],
    train_tensors: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``ckpt_dir/tag`` atomically and point ``ckpt_dir/latest`` at it; return its folder.

    Any failure (a full disk, a kill) leaves the previous checkpoints and ``latest`` as they were."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    final, tmp = ckpt_dir / tag, ckpt_dir / f".{tag}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        metadata = {"format": "pt", **{k: json.dumps(v) for k, v in info.items() if k != "train"}}
        metadata["state_sha256"] = json.dumps(_state_digest(info))
        digests = {MODEL_FILE: save_file(tensors, tmp / MODEL_FILE, metadata=metadata)}
        if train_tensors is not None:
            digests[TRAIN_FILE] = save_file(train_tensors, tmp / TRAIN_FILE, metadata={"format": "pt"})
        info = {**info, "digests": digests}
        write_atomic(tmp / STATE_FILE, json.dumps(info, indent=2))
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            previous = read_pointer(ckpt_dir, "latest")
            raise CheckpointError(
                f"no space left on the device while saving {final}: free some space or set output.dir to "
                f"another disk; the previous checkpoint ({previous or 'none'}) is intact"
            ) from None
        raise
    if final.exists():  # re-saving a tag (e.g. after a resume): swap, then drop the old copy
        old = ckpt_dir / f".{tag}.old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old)
    else:
        os.replace(tmp, final)
    _write_pointer(ckpt_dir, "latest", tag)
    return final


def mark_best(ckpt_dir: Path, tag: str) -> None:
    _write_pointer(ckpt_dir, "best", tag)


def prune(ckpt_dir: Path, keep_last: int) -> list[str]:
    """Delete all but the newest ``keep_last`` checkpoints (0: keep all), never ``latest`` or ``best``;
    return the deleted tags. Leftovers of interrupted saves (hidden .tmp folders) go too."""
    for leftover in ckpt_dir.glob(".*.tmp"):  # an interrupted checkpoint folder, or pointer file
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
    if keep_last <= 0:
        return []
    tags = sorted((p for p in ckpt_dir.iterdir() if p.is_dir() and TAG.match(p.name)), key=_order)
    keep = {read_pointer(ckpt_dir, "latest"), read_pointer(ckpt_dir, "best")}
    doomed = [p for p in tags[:-keep_last] if p.name not in keep]
    for p in doomed:
        shutil.rmtree(p)
    return [p.name for p in doomed]


def _order(folder: Path) -> int:
    """Checkpoints sort by training step (epoch-NNN and step-NNNNNN tags count different things)."""
    try:
        return json.loads((folder / STATE_FILE).read_text())["counters"]["step"]
    except (OSError, KeyError, ValueError, TypeError):
        return -1


def resolve(path: str | Path) -> Path:
    """A run folder, a checkpoint folder or a model.safetensors file -> the model.safetensors path."""
    path = Path(path)
    if path.is_file():
        return path
    if (path / MODEL_FILE).is_file():
        return path / MODEL_FILE
    ckpt_dir = path / "checkpoints"
    tag = read_pointer(ckpt_dir, "latest") if ckpt_dir.is_dir() else None
    if tag is not None:
        target = tag_folder(ckpt_dir, tag) / MODEL_FILE
        if target.is_file():
            return target
        raise CheckpointError(
            f"{ckpt_dir / 'latest'} points to a missing checkpoint ({target}); pass a checkpoint folder instead"
        )
    raise CheckpointError(
        f"no checkpoint at {path}: pass a run folder (with checkpoints/latest), a checkpoint folder, "
        f"or a {MODEL_FILE} file"
    )


def read_state(folder: Path) -> dict | None:
    """A checkpoint folder's state.json, or None where there is none. CheckpointError if unreadable."""
    try:
        state = json.loads((folder / STATE_FILE).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{folder / STATE_FILE} is unreadable ({e}); resume from an older checkpoint") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{folder / STATE_FILE} is not a checkpoint's state (not a JSON object)")
    return state


def verify(folder: Path, state: dict, model_info: dict, files: tuple[str, ...] = (MODEL_FILE, TRAIN_FILE)) -> None:
    """Refuse a checkpoint whose ``files`` or state.json differ from what was saved: each file's SHA-256
    against state.json's record, and state.json's content against the digest the model file's metadata
    holds. Checkpoints saved before distgan recorded digests carry neither and pass unverified."""
    recorded = state.get("digests")
    if recorded is None and "state_sha256" not in model_info:
        return
    hint = f"it was altered or replaced after saving: resume from another checkpoint (ls {folder.parent})"
    if not isinstance(recorded, dict) or model_info.get("state_sha256") != _state_digest(state):
        raise CheckpointError(f"{folder / STATE_FILE} is not the state saved with {folder / MODEL_FILE}; {hint}")
    for name in files:
        if (folder / name).is_file() and (name not in recorded or _sha256_file(folder / name) != recorded[name]):
            raise CheckpointError(
                f"{folder / name} is not the file this checkpoint saved (its SHA-256 differs); {hint}"
            )


def load(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, info) from a checkpoint; info holds 'config' and 'counters'. No pickle involved. Verified
    against the state.json beside it, where there is one."""
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
    if file.name == MODEL_FILE:
        state = read_state(file.parent)
        if state is not None:
            verify(file.parent, state, info, files=(MODEL_FILE,))
    return tensors, info


def module_state(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The state_dict of one network ('G' or 'D') out of a checkpoint's flat tensors."""
    cut = len(prefix) + 1
    return {k[cut:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def load_training_state(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, Any]]:
    """(model tensors, training-state tensors, state.json) of a checkpoint, for an exact resume."""
    folder = resolve(path).parent
    tensors, model_info = load(folder)
    info = read_state(folder)
    if info is None:
        raise CheckpointError(f"{folder} has no {STATE_FILE}; it can be sampled from but not resumed")
    verify(folder, info, model_info)
    if "train" not in info or not (folder / TRAIN_FILE).is_file():
        raise CheckpointError(
            f"{folder} holds weights but no training state ({TRAIN_FILE}); it can be sampled from but not resumed"
        )
    try:
        with safetensors.safe_open(str(folder / TRAIN_FILE), framework="pt") as f:
            train = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except Exception as e:  # noqa: BLE001 (SafetensorError and friends)
        raise CheckpointError(
            f"{folder / TRAIN_FILE} is not a readable safetensors file ({e}); it may be truncated: resume from "
            "an older checkpoint"
        ) from None
    return tensors, train, info


def optimizer_state(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer's state_dict as flat tensors ``prefix.<param>.<key>`` plus a JSON-able rest."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}.{idx}.{key}"] = value.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict, prefix: str) -> None:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith(prefix + "."):
            idx, key = name[len(prefix) + 1 :].split(".", 1)
            state.setdefault(int(idx), {})[key] = value
    for idx, values in meta["scalars"].items():
        state.setdefault(int(idx), {}).update(values)
    params = [p for group in opt.param_groups for p in group["params"]]
    kinds = {frozenset(k for k, v in values.items() if torch.is_tensor(v)) for values in state.values()}
    if state and (sorted(state) != list(range(len(params))) or len(kinds) != 1):
        raise ValueError(f"{prefix} holds state for parameters {sorted(state)[:8]}... of {len(params)}, or not alike")
    for idx, values in state.items():
        for key, value in values.items():
            if torch.is_tensor(value) and value.dim() > 0 and value.shape != params[idx].shape:
                raise ValueError(
                    f"{prefix}.{idx}.{key} has shape {tuple(value.shape)}, its parameter {tuple(params[idx].shape)}"
                )
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in meta["param_groups"]]
    opt.load_state_dict({"state": state, "param_groups": groups})


def abandon_newer(folder: Path) -> list[str]:
    """Resuming from ``folder``: checkpoints saved after it belong to an abandoned continuation. They are
    renamed ``.abandoned-<tag>`` (kept, never deleted, but no longer resumable by accident), and ``latest``
    points at ``folder`` again; a ``best`` among them is dropped."""
    ckpt_dir = folder.parent
    mine = _order(folder)
    moved = []
    for p in ckpt_dir.iterdir():
        if p.is_dir() and TAG.match(p.name) and p != folder and _order(p) > mine:
            target = ckpt_dir / f".abandoned-{p.name}"
            while target.exists():  # abandoned twice (resumed from the same older checkpoint again): keep both
                target = target.with_name(target.name + "+")
            p.rename(target)
            moved.append(p.name)
    if read_pointer(ckpt_dir, "best") in moved:
        (ckpt_dir / "best").unlink()
    if read_pointer(ckpt_dir, "latest") != folder.name:
        _write_pointer(ckpt_dir, "latest", folder.name)
    return moved
