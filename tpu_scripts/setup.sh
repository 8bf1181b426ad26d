#!/usr/bin/env bash
# Copies this checkout to every worker and installs it there with JAX for TPU.
#   DRY_RUN=1 tpu_scripts/setup.sh            # copy the local checkout (default)
#   tpu_scripts/setup.sh --git URL [BRANCH]   # or clone/pull a git repository on the workers
set -euo pipefail
# shellcheck source=tpu_scripts/common.sh
source "$(dirname "$0")/common.sh"

root="$(cd "$(dirname "$0")/.." && pwd)"
flags=()
mapfile -t flags < <(project_flag)

if [[ "${1:-}" == "--git" ]]; then
  url="${2:?usage: setup.sh --git URL [BRANCH]}"
  branch="${3:-main}"
  on_workers "if [ -d ${REPO_DIR}/.git ]; then git -C ${REPO_DIR} fetch -q origin ${branch} && git -C ${REPO_DIR} checkout -q ${branch} && git -C ${REPO_DIR} pull -q; else git clone -q -b ${branch} ${url} ${REPO_DIR}; fi"
else
  archive="$(mktemp -t rlhf_jax.XXXXXX.tar.gz)"
  run tar -C "${root}" --exclude=.git --exclude=.venv --exclude=runs -czf "${archive}" .
  run gcloud compute tpus tpu-vm scp "${archive}" "${TPU_NAME}:/tmp/rlhf_jax.tar.gz" \
    --zone="${TPU_ZONE}" "${flags[@]}" --worker=all
  on_workers "mkdir -p ${REPO_DIR} && tar -C ${REPO_DIR} -xzf /tmp/rlhf_jax.tar.gz"
fi
on_workers "cd ${REPO_DIR} && python3 -m venv .venv && . .venv/bin/activate && pip install -q -U pip && pip install -q -e . 'jax[tpu]'"
