#!/usr/bin/env bash
# Creates the TPU VM slice TPU_NAME of type TPU_TYPE (see common.sh for the settings).
#   DRY_RUN=1 TPU_TYPE=v5p-64 tpu_scripts/create.sh
set -euo pipefail
# shellcheck source=tpu_scripts/common.sh
source "$(dirname "$0")/common.sh"

flags=()
mapfile -t flags < <(project_flag)
if [[ "${TPU_SPOT}" == "1" ]]; then
  flags+=("--spot")
fi
run gcloud compute tpus tpu-vm create "${TPU_NAME}" --zone="${TPU_ZONE}" \
  --accelerator-type="${TPU_TYPE}" --version="${TPU_RUNTIME}" "${flags[@]}"
