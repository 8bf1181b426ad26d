"""Rollout benchmark: decode tokens/s, ms per decode step, and the share of the memory-bandwidth
roofline reached by `rlhf_jax.rollout.JaxSampler`.

    python bench/rollout_bench.py --preset tiny                       # CPU smoke test, seconds
    python bench/rollout_bench.py --preset cpu-small                  # CPU, KV cache from DRAM
    XLA_PYTHON_CLIENT_PREALLOCATE=false python3 bench/rollout_bench.py --preset tinyllama-1.1b

The 1.1B preset is the TinyLlama shape in bf16 at batch 64, prompt 128, 256 new tokens: the
rollout shape of ../shared/bench/gpu_anchor.py, to be run on the same card in the same session.

What is measured (random weights; EOS off, so every row decodes all N tokens; plain sampling at
temperature 1 unless --greedy / --top-k / --top-p):
- generate(N): one full call, host prompt padding and transfer included, after a warm-up call;
- generate(1): the same call with max_new_tokens=1, i.e. prefill plus one sampled token;
- ms per decode step = (generate(N) - generate(1)) / (N - 1);
- new tokens/s = B * N / generate(N) (end to end, as the anchor's figures);
- bytes per step = all params + the whole static KV cache (2 * L * B * (P + N) * K * H), both
  read once per step by the decode program; roofline step = bytes / copy bandwidth, where the
  bandwidth is measured here by a device copy (read + write of a large buffer);
- roofline share = roofline step / measured step.
Writes the figures as JSON to $OUT/rollout_bench_<preset>.json when OUT is set.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from rlhf_jax.models import LlamaForCausalLM, create_model, preset
from rlhf_jax.rollout import JaxSampler, PromptBatch, RolloutConfig
from rlhf_jax.sharding import make_mesh

# bench preset -> (model preset, model overrides, batch, prompt length, new tokens)
SHAPES = {
    "tiny": ("tiny", {}, 8, 16, 64),  # fits in CPU caches: overhead-bound, a smoke test
    # small enough for 2 CPU cores, large enough that the 67 MB KV cache is read from DRAM
    "cpu-small": ("tiny", dict(vocab_size=1024, hidden_size=256, intermediate_size=512,
                               num_layers=4, num_heads=4, num_kv_heads=2), 32, 256, 256),
    "tinyllama-1.1b": ("tinyllama-1.1b", {}, 64, 128, 256),  # bf16; the GPU target
}


def copy_bandwidth(nbytes: int, repeats: int = 10) -> float:
    """Bytes/s of a device copy (each element read once and written once), best of `repeats`."""
    x = jnp.zeros((nbytes // 4,), jnp.float32)
    bump = jax.jit(lambda a: a + 1.0)  # elementwise: reads and writes every byte once
    jax.block_until_ready(bump(x))
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(bump(x))
        best = min(best, time.perf_counter() - t)
    return 2 * x.nbytes / best


def timed(fn, repeats: int) -> float:
    """Best wall time of `repeats` calls of fn (each blocked until its outputs are ready)."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t)
    return best


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--batch", type=int, help="default: the preset's")
    parser.add_argument("--prompt", type=int, help="prompt length (default: the preset's)")
    parser.add_argument("--new", type=int, help="new tokens per row (default: the preset's)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--greedy", action="store_true")
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--top-p", type=float, default=1.0)
    args = parser.parse_args(argv)
    model_preset, overrides, batch, prompt_len, new = SHAPES[args.preset]
    batch, prompt_len, new = args.batch or batch, args.prompt or prompt_len, args.new or new
    if new < 2:
        raise SystemExit("--new must be >= 2 (the step time is a difference of two calls)")

    dev = jax.devices()[0]
    res: dict = dict(date=datetime.date.today().isoformat(), host=platform.node(),
                     device=f"{dev.platform}:{getattr(dev, 'device_kind', '?')}",
                     num_devices=jax.device_count(), jax=jax.__version__, preset=args.preset,
                     batch=batch, prompt=prompt_len, new_tokens=new)
    on_gpu = dev.platform == "gpu"
    res["copy_GBps"] = round(copy_bandwidth(2**30 if on_gpu else 2**26) / 1e9, 2)

    cfg = preset(model_preset, **overrides, max_position_embeddings=max(prompt_len + new, 2048))
    mesh = make_mesh()
    t = time.perf_counter()
    model = create_model(LlamaForCausalLM, cfg, mesh=mesh)
    sampler = JaxSampler(model, mesh=mesh, prompt_buckets=(prompt_len,))
    del model
    res["init_s"] = round(time.perf_counter() - t, 1)

    rng = np.random.default_rng(0)
    ids = rng.integers(3, cfg.vocab_size, size=(batch, prompt_len)).astype(np.int32)
    prompts = PromptBatch(ids, np.ones_like(ids))
    sampling = dict(greedy=args.greedy, top_k=args.top_k, top_p=args.top_p, eos_token_id=None)
    full, one = RolloutConfig(max_new_tokens=new, **sampling), RolloutConfig(max_new_tokens=1, **sampling)
    key = jax.random.key(0)

    t = time.perf_counter()
    out = jax.block_until_ready(sampler.generate(None, prompts, full, key=key))
    res["first_call_s"] = round(time.perf_counter() - t, 1)  # compile + run
    assert int(np.asarray(out.lengths_B).min()) == new, "every row must decode all new tokens"
    jax.block_until_ready(sampler.generate(None, prompts, one, key=key))
    t_full = timed(lambda: sampler.generate(None, prompts, full, key=key), args.repeats)
    t_one = timed(lambda: sampler.generate(None, prompts, one, key=key), args.repeats)
    assert sampler.num_compilations == 2, sampler.num_compilations

    step_s = (t_full - t_one) / (new - 1)
    param_bytes = sum(x.nbytes for x in jax.tree.leaves(sampler.params))
    itemsize = jnp.dtype(cfg.dtype).itemsize
    kv_bytes = (2 * cfg.num_layers * batch * (prompt_len + new) * cfg.num_kv_heads
                * cfg.resolved_head_dim * itemsize)
    roofline_s = (param_bytes + kv_bytes) / (res["copy_GBps"] * 1e9)
    res.update(
        params_M=round(sum(x.size for x in jax.tree.leaves(sampler.params)) / 1e6, 1),
        generate_s=round(t_full, 4), prefill_plus_one_s=round(t_one, 4),
        new_tokens_per_s=round(batch * new / t_full),
        decode_tokens_per_s=round(batch / step_s),
        ms_per_step=round(step_s * 1e3, 3),
        bytes_per_step_GB=round((param_bytes + kv_bytes) / 1e9, 4),
        param_GB=round(param_bytes / 1e9, 4), kv_cache_GB=round(kv_bytes / 1e9, 4),
        roofline_ms_per_step=round(roofline_s * 1e3, 4),
        roofline_share=round(roofline_s / step_s, 3),
    )
    for k, v in res.items():
        print(f"{k}: {v}", flush=True)
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], f"rollout_bench_{args.preset}.json"), "w") as f:
            json.dump(res, f, indent=1)
    return res


if __name__ == "__main__":
    main()
