#!/usr/bin/env bash
# Prepared GPU check: v5 for a fixed number of steps on CUDA in fp32, bf16 and fp16; checks that the losses
# stay finite and a grid is written, and prints img/s. Writes runs/gpu_check/REPORT.md (and .json).
#   launch/gpu_check.sh                 # STEPS=500 by default; ~1-2 min on one H100
#   STEPS=2000 CONFIG=configs/default.yaml launch/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
STEPS=${STEPS:-500}
CONFIG=${CONFIG:-configs/v5.yaml}
OUT=${OUT_DIR:-runs/gpu_check}
$PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: this check needs a GPU')"
$PY -m distgan.data --dataset mnist --root data
rm -rf "$OUT"
for mp in no bf16 fp16; do
  $PY -m distgan.train --config "$CONFIG" "train.max_steps=$STEPS" "train.mixed_precision=$mp" \
      output.tracker=none "output.dir=$OUT" "output.name=$mp" train.log_every=100
done
$PY - "$OUT" <<'PY'
import json, math, sys, torch
from pathlib import Path
out = Path(sys.argv[1]); rows = []
for mp in ("no", "bf16", "fp16"):
    run = out / mp
    metrics = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r[k] for r in metrics if "loss_d" in r for k in ("loss_d", "loss_g")]
    finite = all(v is not None and math.isfinite(v) for v in losses)
    grids = sorted((run / "samples").glob("*.png"))
    s = json.loads((run / "summary.json").read_text())
    skipped = next((r["skipped_fp16_steps"] for r in reversed(metrics) if "skipped_fp16_steps" in r), None)
    rows.append({"precision": mp, "steps": s["steps"], "img_per_s": s["img_per_s"], "seconds": s["seconds"],
                 "finite": finite, "grid": str(grids[-1]) if grids else None, "skipped_fp16": skipped})
gpu = torch.cuda.get_device_name(0)
lines = [f"# GPU check on {gpu} (torch {torch.__version__})", "",
         "| precision | steps | img/s | seconds | losses finite | grid | fp16 skipped steps |", "|---|---|---|---|---|---|---|"]
lines += [f"| {r['precision']} | {r['steps']} | {r['img_per_s']:.0f} | {r['seconds']:.1f} | {r['finite']} | {r['grid']} | {r['skipped_fp16']} |" for r in rows]
(out / "REPORT.md").write_text("\n".join(lines) + "\n")
(out / "report.json").write_text(json.dumps({"gpu": gpu, "rows": rows}, indent=2))
print("\n".join(lines))
sys.exit(0 if all(r["finite"] and r["grid"] for r in rows) else 1)
PY
