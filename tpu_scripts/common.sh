#!/usr/bin/env bash
# Shared settings and helpers for the TPU scripts. Source it; do not run it.
#
# Settings (environment variables, with defaults):
#   TPU_NAME       name of the TPU VM slice           (rlhf-jax)
#   TPU_ZONE       zone                                (us-central2-b)
#   TPU_PROJECT    Google Cloud project                (gcloud's default project)
#   TPU_TYPE       accelerator type                    (v4-32)
#   TPU_RUNTIME    TPU VM software version             (tpu-ubuntu2204-base)
#   TPU_SPOT       1 for a preemptible (spot) slice    (0)
#   REPO_DIR       where the code lives on the workers (~/rlhf_jax)
#   DRY_RUN        1: print every command instead of running it (0)

TPU_NAME="${TPU_NAME:-rlhf-jax}"
TPU_ZONE="${TPU_ZONE:-us-central2-b}"
TPU_PROJECT="${TPU_PROJECT:-}"
TPU_TYPE="${TPU_TYPE:-v4-32}"
TPU_RUNTIME="${TPU_RUNTIME:-tpu-ubuntu2204-base}"
TPU_SPOT="${TPU_SPOT:-0}"
REPO_DIR="${REPO_DIR:-~/rlhf_jax}"
DRY_RUN="${DRY_RUN:-0}"

# run CMD...: runs a command, or prints it (shell-quoted, prefixed with "+ ") when DRY_RUN=1.
run() {
  if [[ "${DRY_RUN}" == "1" ]]; then
    printf '+'
    printf ' %q' "$@"
    printf '\n'
  else
    "$@"
  fi
}

# project_flag: the --project flag when TPU_PROJECT is set.
project_flag() {
  if [[ -n "${TPU_PROJECT}" ]]; then
    printf '%s\n' "--project=${TPU_PROJECT}"
  fi
}

# on_workers CMD: runs a shell command on every worker of the slice at once.
on_workers() {
  local flags=()
  mapfile -t flags < <(project_flag)
  run gcloud compute tpus tpu-vm ssh "${TPU_NAME}" --zone="${TPU_ZONE}" "${flags[@]}" \
    --worker=all --command="$1"
}

die() {
  printf 'error: %s\n' "$*" >&2
  exit 2
}
