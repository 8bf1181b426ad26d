#!/usr/bin/env bash
# Runs an experiment as N processes on this machine (CPU, gloo collectives, 127.0.0.1): the
# multi-host code path without a cluster. Each process gets DEVICES_PER_PROCESS virtual CPU devices.
#   NUM_PROCESSES=2 DEVICES_PER_PROCESS=4 tpu_scripts/launch_local.sh experiments.sft --config...
# Output of process i goes to ${LOG_DIR:-.}/process_i.log; exits non-zero if any process failed.
set -euo pipefail
# shellcheck source=tpu_scripts/common.sh
source "$(dirname "$0")/common.sh"

module="${1:-}"
[[ "${module}" == experiments.* ]] || die "usage: launch_local.sh experiments.NAME [--config.key=value ...]"
shift
num="${NUM_PROCESSES:-2}"
devices="${DEVICES_PER_PROCESS:-4}"
port="${PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
log_dir="${LOG_DIR:-.}"
pids=()
for ((i = 0; i < num; i++)); do
  if [[ "${DRY_RUN}" == "1" ]]; then
    run env JAX_PLATFORMS=cpu XLA_FLAGS="--xla_force_host_platform_device_count=${devices}" \
      JAX_COORDINATOR_ADDRESS="127.0.0.1:${port}" JAX_NUM_PROCESSES="${num}" JAX_PROCESS_ID="${i}" \
      python -m "${module}" "$@"
    continue
  fi
  JAX_PLATFORMS=cpu XLA_FLAGS="--xla_force_host_platform_device_count=${devices}" \
    JAX_COORDINATOR_ADDRESS="127.0.0.1:${port}" JAX_NUM_PROCESSES="${num}" JAX_PROCESS_ID="${i}" \
    python -m "${module}" "$@" > "${log_dir}/process_${i}.log" 2>&1 &
  pids+=("$!")
done
status=0
for pid in "${pids[@]}"; do
  wait "${pid}" || status=1
done
exit "${status}"
