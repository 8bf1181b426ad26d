#!/usr/bin/env bash
# Follows the run log of one worker (default 0): tpu_scripts/logs.sh [WORKER]
set -euo pipefail
# shellcheck source=tpu_scripts/common.sh
source "$(dirname "$0")/common.sh"

worker="${1:-0}"
[[ "${worker}" =~ ^[0-9]+$ ]] || die "worker must be a number, got '${worker}'"
flags=()
mapfile -t flags < <(project_flag)
run gcloud compute tpus tpu-vm ssh "${TPU_NAME}" --zone="${TPU_ZONE}" "${flags[@]}" \
  --worker="${worker}" --command="tail -n 200 -f ~/rlhf_jax_run.log"
