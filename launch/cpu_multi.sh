#!/usr/bin/env bash
# N cooperating CPU processes (gloo) on one machine; default 2.
#   launch/cpu_multi.sh --config configs/default.yaml train.epochs=1
#   NPROC=4 launch/cpu_multi.sh --config configs/v5.yaml
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export ACCELERATE_USE_CPU=1
exec accelerate launch --config_file "$here/cpu_multi.yaml" --num_processes "${NPROC:-2}" \
    --main_process_port "${MASTER_PORT:-29500}" -m distgan.train "$@"
