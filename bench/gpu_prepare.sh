#!/usr/bin/env bash
# Prepares, on the development machine, what a GPU benchmark session carries to the lent machine:
#   .whl/     Python 3.12 wheels of bench/gpu_wheels.txt (that image has no package index)
#   shared/   a copy of ../shared (the anchor script gpu_anchor.py and its figures)
# Both are excluded from git here (.git/info/exclude) and travel as the `carry` paths ["shared", ".whl"].
# Usage, from the repository root: bash bench/gpu_prepare.sh   (DRY_RUN=1 prints the commands)
set -euo pipefail

SHARED="${SHARED:-../shared}"
PY="${PY:-python3}"
# run CMD... (prints the command instead under DRY_RUN=1)
# shellcheck source=tpu_scripts/common.sh
source "$(dirname "$0")/../tpu_scripts/common.sh"

for path in /.whl/ /shared/; do
  if ! grep -qxF "${path}" .git/info/exclude 2>/dev/null; then
    if [[ "${DRY_RUN}" == "1" ]]; then
      echo "+ echo ${path} >> .git/info/exclude"
    else
      echo "${path}" >>.git/info/exclude
    fi
  fi
done
mapfile -t wheels < <(grep -v '^#' bench/gpu_wheels.txt | grep -v '^$')
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
         manylinux2014_x86_64 manylinux1_x86_64 any; do
  platforms+=(--platform "${p}")
done
# every wheel but promise (an sdist only: built here, pure Python)
pure=()
for w in "${wheels[@]}"; do
  [[ "${w}" == promise==* ]] && continue
  pure+=("${w}")
done
run "${PY}" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d .whl "${pure[@]}"
for w in "${wheels[@]}"; do
  if [[ "${w}" == promise==* ]]; then
    run "${PY}" -m pip wheel -q --no-deps -w .whl "${w}"
  fi
done
run rm -rf shared
run mkdir -p shared
run cp -r "${SHARED}/bench" shared/bench
