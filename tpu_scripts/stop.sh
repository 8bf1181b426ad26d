#!/usr/bin/env bash
# Stops the run on every worker with SIGTERM: the experiments checkpoint and exit cleanly.
#   tpu_scripts/stop.sh            # then, to free the slice: tpu_scripts/stop.sh --delete
set -euo pipefail
# shellcheck source=tpu_scripts/common.sh
source "$(dirname "$0")/common.sh"

on_workers "pkill -TERM -f 'python -m experiments\.' || true"
if [[ "${1:-}" == "--delete" ]]; then
  flags=()
  mapfile -t flags < <(project_flag)
  run gcloud compute tpus tpu-vm delete "${TPU_NAME}" --zone="${TPU_ZONE}" "${flags[@]}" --quiet
fi
