#!/usr/bin/env bash
# Starts this node's process of a multi-node GPU run (one process per node, all local GPUs).
#   COORDINATOR=10.0.0.1:1234 NUM_NODES=2 NODE_RANK=0 tpu_scripts/launch_gpu.sh experiments.sft ...
# Run the same command on every node with its own NODE_RANK; rank 0's host is the coordinator.
set -euo pipefail
# shellcheck source=tpu_scripts/common.sh
source "$(dirname "$0")/common.sh"

module="${1:-}"
[[ "${module}" == experiments.* ]] || die "usage: launch_gpu.sh experiments.NAME [--config.key=value ...]"
shift
: "${COORDINATOR:?set COORDINATOR=host:port (the rank-0 node)}"
: "${NUM_NODES:?set NUM_NODES}"
: "${NODE_RANK:?set NODE_RANK}"
run env JAX_COORDINATOR_ADDRESS="${COORDINATOR}" JAX_NUM_PROCESSES="${NUM_NODES}" \
  JAX_PROCESS_ID="${NODE_RANK}" python -m "${module}" "$@"
