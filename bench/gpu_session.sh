#!/usr/bin/env bash
# The GPU benchmark session, one part per call, on the lent machine (see bench/RESULTS.md):
#   bash bench/gpu_session.sh PART...     from the repository root, carry ["shared", ".whl"]
# Parts (each writes its JSON under $OUT and is cut off after PART_TIMEOUT seconds, default 240):
#   versions      python, jax, flax, optax, the device
#   peak          the anchor's matmul peak and copy bandwidth (shared/bench/gpu_anchor.py peak)
#   anchor        the anchor's plain JAX train step and decode (gpu_anchor.py jax_bench)
#   steps-fused   train_bench SFT / reward / DPO steps, bf16 params, dots_no_batch remat, cuDNN attention
#   steps         train_bench steps at the preset's numerics (float32 params, full remat, XLA attention)
#   ppo           train_bench's PPO iteration (phases, device-busy share, recompilations)
#   rollout       rollout_bench decode at the TinyLlama shape
# PRESET (default tinyllama-1.1b) picks the benches' preset; PRESET=tiny (and ANCHOR_FLAGS=--tiny) is a CPU
# smoke test of the script itself. DRY_RUN=1 prints the commands instead of running them.
set -uo pipefail

DRY_RUN="${DRY_RUN:-0}"
PART_TIMEOUT="${PART_TIMEOUT:-240}"
PRESET="${PRESET:-tinyllama-1.1b}"
read -r -a ANCHOR <<<"${ANCHOR_FLAGS:-}"
OUT="${OUT:-${PWD}/bench_out}"
mkdir -p "${OUT}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1 OUT
PYTHONPATH="${PWD}"
if compgen -G ".whl/*.whl" >/dev/null; then
  if [[ "${DRY_RUN}" != "1" ]]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      .whl/*.whl || exit 1
  fi
  PYTHONPATH="/tmp/site:${PYTHONPATH}"
fi
export PYTHONPATH

step() {
  local name="$1"
  shift
  if [[ "${DRY_RUN}" == "1" ]]; then
    printf '+'
    printf ' %q' timeout "${PART_TIMEOUT}" "$@"
    printf '\n'
    return 0
  fi
  echo "=== ${name} ($(date -u +%H:%M:%S))"
  timeout "${PART_TIMEOUT}" "$@" 2>&1 | tee "${OUT}/${name}.log"
  echo "=== ${name}: exit ${PIPESTATUS[0]}"
}

TRAIN=(python3 bench/train_bench.py --preset "${PRESET}")
for part in "$@"; do
  case "${part}" in
    versions)
      step versions python3 -c 'import sys, jax, flax, optax; print(sys.version, jax.__version__, flax.__version__, optax.__version__, jax.devices())' ;;
    peak) step peak python3 shared/bench/gpu_anchor.py "${ANCHOR[@]}" peak ;;
    anchor) step anchor python3 shared/bench/gpu_anchor.py "${ANCHOR[@]}" jax_bench ;;
    steps-fused)
      step steps-fused "${TRAIN[@]}" --skip ppo --param-dtype bfloat16 --remat dots_no_batch --attention cudnn ;;
    steps) step steps "${TRAIN[@]}" --skip ppo ;;
    ppo) step ppo "${TRAIN[@]}" --skip steps ;;
    rollout) step rollout python3 bench/rollout_bench.py --preset "${PRESET}" ;;
    *)
      echo "unknown part '${part}': versions peak anchor steps-fused steps ppo rollout" >&2
      exit 2 ;;
  esac
done
