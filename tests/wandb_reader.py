"""Read an offline W&B run file (``run-*.wandb``) back, for tests: what did the run really record?

The file is a ':W&B' header (7 bytes) then LevelDB-log framing (32 KiB blocks; each chunk has a
crc32, a little-endian length and a type FULL/FIRST/MIDDLE/LAST) around protobuf ``Record``s.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

BLOCK, HEADER = 32768, 7


def records(path: Path) -> list[pb.Record]:
    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B run file")
    pos, payloads, pending = HEADER, [], b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # block trailer: zero padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if kind == 0:
            pos += left
            continue
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == 1:
            payloads.append(chunk)
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            payloads.append(pending + chunk)
    return [pb.Record.FromString(p) for p in payloads]


def history(path: Path) -> list[dict]:
    """Every logged row as {key: value} (keys with '/' kept as logged)."""
    rows = []
    for rec in records(path):
        if rec.WhichOneof("record_type") == "history":
            rows.append(
                {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in rec.history.item}
            )
    return rows


def config(path: Path) -> dict:
    out = {}
    for rec in records(path):
        if rec.WhichOneof("record_type") == "config":
            for item in rec.config.update:
                out[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return out


def run_info(path: Path) -> dict:
    """The run record: id, name, group, job type, tags."""
    for rec in records(path):
        if rec.WhichOneof("record_type") == "run":
            r = rec.run
            return {
                "id": r.run_id,
                "name": r.display_name,
                "group": r.run_group,
                "job_type": r.job_type,
                "tags": list(r.tags),
            }
    raise ValueError(f"{path} holds no run record")
