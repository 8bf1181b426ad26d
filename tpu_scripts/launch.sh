#!/usr/bin/env bash
# Starts one experiment on every worker at once, in the background, logging to ~/rlhf_jax_run.log.
# jax.distributed discovers the slice on its own (rlhf_jax.distributed).
#   DRY_RUN=1 tpu_scripts/launch.sh experiments.ppo --config.workdir=gs://bucket/ppo
set -euo pipefail
# shellcheck source=tpu_scripts/common.sh
source "$(dirname "$0")/common.sh"

module="${1:-}"
[[ "${module}" == experiments.* ]] || die "usage: launch.sh experiments.NAME [--config.key=value ...]"
shift
args=""
for a in "$@"; do
  args+=" $(printf '%q' "${a}")"
done
on_workers "cd ${REPO_DIR} && . .venv/bin/activate && nohup python -m ${module}${args} > ~/rlhf_jax_run.log 2>&1 &"
