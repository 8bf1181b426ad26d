"""Training benchmark: SFT / reward / DPO steps (tokens/s, MFU) and one PPO iteration by phase.

    python bench/train_bench.py                                   # tiny preset, CPU, about a minute
    XLA_PYTHON_CLIENT_PREALLOCATE=false python3 bench/train_bench.py --preset tinyllama-1.1b   # GPU

Random weights, random tokens, the repository's own jitted steps (`rlhf_jax.training.steps`,
`preference_steps`, `experiments.ppo.PPORunner`). What is measured:
- peak: FLOP/s of a square matmul in the compute dtype (bf16 on GPU), measured here, in this run;
- SFT / reward / DPO step: best of `--repeats` calls after a warm-up, each blocked until ready;
  tokens/s = rows x sequence length / step time (a DPO or reward pair is two rows);
  model FLOPs per token = 6 N + 6 L T d (matmuls and causal attention, forward + backward, no
  credit for recomputation; the anchor's count), plus 2 N + 2 L T d for DPO's reference forward;
  MFU = model FLOPs / step time / peak;
- PPO iteration (`experiments.ppo.PPORunner.iteration` itself, reward "word_count", EMA reference):
  after `--ppo-warmup` iterations, one iteration run through its `phase` hook with a block after
  each phase (generation, critic values, actor and reference log-probs, scoring, advantages, actor
  updates, EMA, critic updates), then `--repeats` plain iterations (best = the iteration's wall
  time); device-busy share = the device phases' times (scoring excluded when the reward runs on
  the host) / the plain iteration's wall time, an estimate (each phase's time includes its own
  dispatch); and the programs compiled after the first iteration (must be 0). The PPO models have
  the preset's vocabulary: a real HF tokenizer (a small BPE padded with added tokens) of that size.
Writes the figures as JSON to $OUT/train_bench_<preset>.json when OUT is set.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import platform
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from rlhf_jax.models import LlamaForCausalLM, LlamaForScore, create_model, preset
from rlhf_jax.sharding import make_mesh, put_batch
from rlhf_jax.training.preference_steps import DPOLoss, dpo_step, score_model_step
from rlhf_jax.training.state import OptimConfig, init_train_state, make_optimizer, split_model
from rlhf_jax.training.steps import jit_step, sft_step

# bench preset -> (model preset, overrides, batch (sequences; pairs for reward / DPO), sequence length,
#                  PPO rollouts, PPO prompt length, PPO new tokens)
SHAPES = {
    "tiny": ("tiny", dict(dtype="float32"), 8, 128, 16, 16, 32),
    "tinyllama-1.1b": ("tinyllama-1.1b", dict(param_dtype="float32", remat="full"), 8, 1024, 64, 128, 256),
}


def matmul_peak(dtype, n: int, repeats: int = 10) -> float:
    """FLOP/s of an n x n x n matmul in `dtype`, best of `repeats`."""
    a = jnp.ones((n, n), dtype)
    mm = jax.jit(lambda x: x @ x)
    jax.block_until_ready(mm(a))
    return 2 * n ** 3 / timed(lambda: mm(a), repeats)


def timed(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t)
    return best


def flops_per_token(cfg, seq: int, *, forward_only: bool = False, with_head: bool = True) -> float:
    n = cfg.num_params(with_lm_head=with_head) - cfg.vocab_size * cfg.hidden_size  # embeddings: no matmul
    per = 6 * n + 6 * cfg.num_layers * seq * cfg.hidden_size
    return per / 3 if forward_only else per


def _rows(mesh, rows: int, seq: int, vocab: int, prefixes=("",), seed: int = 0):
    rng = np.random.default_rng(seed)
    out = {}
    for p in prefixes:
        ids = rng.integers(3, vocab, size=(rows, seq)).astype(np.int32)
        ones = np.ones_like(ids)
        out.update({p + "input_ids": ids, p + "attention_mask": ones, p + "loss_mask": ones,
                    p + "positions": np.broadcast_to(np.arange(seq, dtype=np.int32), ids.shape).copy(),
                    p + "segment_ids": ones})
    return put_batch(out, mesh)


def bench_steps(cfg, mesh, batch: int, seq: int, peak: float, repeats: int) -> dict:
    """SFT, reward-model and DPO steps: seconds, tokens/s, TFLOP/s, MFU."""
    out = {}
    tx = make_optimizer(OptimConfig(lr=1e-6))
    for run in ("sft", "reward", "dpo"):
        model = create_model(LlamaForScore if run == "reward" else LlamaForCausalLM, cfg, mesh=mesh)
        graphdef, params = split_model(model)
        del model
        ref = jax.tree.map(lambda x: jnp.array(x, cfg.dtype, copy=True), params) if run == "dpo" else None
        state = init_train_state(params, tx)
        if run == "sft":
            step, args, rows = jit_step(sft_step, state=state, graphdef=graphdef, tx=tx), (), batch
            data = _rows(mesh, batch, seq, cfg.vocab_size)
        else:
            kw = dict(kind="reward") if run == "reward" else dict(loss=DPOLoss())
            fn = score_model_step if run == "reward" else dpo_step
            step, args, rows = jit_step(fn, state=state, graphdef=graphdef, tx=tx, **kw), (), 2 * batch
            data = _rows(mesh, batch, seq, cfg.vocab_size, ("chosen_", "rejected_"))
            if run == "dpo":
                args = (ref,)
        holder = {"state": state}

        def call():
            holder["state"], metrics = step(holder["state"], data, *args)
            return metrics
        with jax.set_mesh(mesh):
            t0 = time.perf_counter()
            jax.block_until_ready(call())
            first = time.perf_counter() - t0
            seconds = timed(call, repeats)
        per_token = flops_per_token(cfg, seq, with_head=run != "reward")
        if run == "dpo":
            per_token += flops_per_token(cfg, seq, forward_only=True)
        tokens = rows * seq
        out[run] = dict(step_s=round(seconds, 4), first_call_s=round(first, 1), tokens_per_s=round(tokens / seconds),
                        tflops=round(per_token * tokens / seconds / 1e12, 3),
                        mfu=round(per_token * tokens / seconds / peak, 3))
        holder.clear()  # drop this run's buffers before the next model is created
        state = ref = data = args = None
    return out


def _ppo_runner(model_preset: str, overrides: dict, rollouts: int, prompt_len: int, new_tokens: int, mesh, tmp: str,
                vocab: int):
    """A PPORunner with the word_count reward and a real HF tokenizer of `vocab` tokens (a small BPE
    padded with added tokens "<w0>", "<w1>", ..., so the LM head and log-prob passes have the
    preset's vocabulary size; random weights rarely sample EOS, so rows decode about every token)."""
    from experiments.ppo import PPORunner, get_config
    from rlhf_jax.config import apply_overrides
    from rlhf_jax.data.tiny_tokenizer import train_tiny_tokenizer
    from rlhf_jax.models import load_tokenizer

    words = ["the cat sat on the mat", "every answer needs a reason", "e e e e", "models learn from data"]
    path = os.path.join(tmp, "tok")
    tok = train_tiny_tokenizer(words * 20, path, vocab_size=300)
    if vocab > len(tok):
        tok.add_tokens([f"<w{i}>" for i in range(vocab - len(tok))])
        tok.save_pretrained(path)
    flags = {"actor.preset": model_preset, "ppo.large_batch_size": rollouts, "ppo.mini_batches": 4,
             "data.max_prompt_length": prompt_len, "generation.max_new_tokens": new_tokens,
             "reward.source": "word_count", "reward.word": "e", "tokenizer_path": path}
    flags.update({f"actor.{k}": v for k, v in overrides.items()})
    cfg = apply_overrides(get_config(), [(k, str(v)) for k, v in flags.items()])
    tokenizer = load_tokenizer(cfg.tokenizer_path)
    return PPORunner(cfg, mesh, tokenizer), tokenizer


def bench_ppo(model_preset: str, overrides: dict, rollouts: int, prompt_len: int, new_tokens: int, mesh,
              warmup: int, vocab: int, repeats: int = 2) -> dict:
    """PPO iterations: `warmup` plain ones, one phase by phase, then `repeats` plain ones (the best
    of which is the iteration's wall time)."""
    from rlhf_jax.training.ppo_rewards import ModelReward

    with tempfile.TemporaryDirectory() as tmp:
        runner, tokenizer = _ppo_runner(model_preset, overrides, rollouts, prompt_len, new_tokens, mesh, tmp,
                                        vocab)
    state, runner.initial_state = runner.initial_state, None
    rng = np.random.default_rng(0)
    ids = rng.integers(4, len(tokenizer), size=(rollouts, prompt_len)).astype(np.int32)
    prompts = {"prompt_ids": ids, "prompt_mask": np.ones_like(ids), "example_index": np.arange(rollouts)}
    metas = [{"index": i} for i in range(rollouts)]
    walls = []
    phases: dict[str, float] = collections.defaultdict(float)

    generated = []

    def phase(name, fn):
        t = time.perf_counter()
        out = jax.block_until_ready(fn())
        phases[name] += time.perf_counter() - t
        if name == "generation":
            generated.append(out)
        return out

    def iterate(it, **kw):
        t0 = time.perf_counter()
        new_state, metrics = runner.iteration(state, prompts, metas, it, **kw)
        jax.block_until_ready((new_state, metrics))
        return new_state, time.perf_counter() - t0

    with jax.set_mesh(mesh):
        for it in range(warmup):
            state, wall = iterate(it)
            walls.append(wall)
        after_first = dict(runner.compilations())
        state, phased_wall = iterate(warmup, phase=phase)
        timings = []
        for it in range(warmup + 1, warmup + 1 + repeats):
            state, w = iterate(it)
            timings.append(w)
        wall = min(timings)
    compiled_after_first = {k: v - after_first.get(k, 0) for k, v in runner.compilations().items()
                            if v != after_first.get(k, 0)}
    host = () if isinstance(runner.reward, ModelReward) else ("scoring",)
    device_s = sum(v for k, v in phases.items() if k not in host)
    new_tokens_total = int(np.asarray(jax.device_get(generated[0].lengths_B)).sum())
    return dict(rollouts=rollouts, prompt=prompt_len, new_tokens=new_tokens, vocab=len(tokenizer),
                warmup_iteration_s=[round(w, 3) for w in walls], iteration_s=round(wall, 3),
                phased_iteration_s=round(phased_wall, 3), phases_s={k: round(v, 4) for k, v in phases.items()},
                host_phases=list(host), device_phases_s=round(device_s, 4),
                device_busy_share=round(min(device_s / wall, 1.0), 3),
                generation_new_tokens_per_s=round(new_tokens_total / phases["generation"]),
                compilations_after_first_iteration=sum(compiled_after_first.values()),
                recompiled=compiled_after_first)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ppo-warmup", type=int, default=2, help="plain PPO iterations before the phased one")
    parser.add_argument("--skip", choices=("steps", "ppo"), action="append", default=[])
    parser.add_argument("--param-dtype", choices=("float32", "bfloat16"), help="default: the preset's")
    parser.add_argument("--remat", choices=("none", "full", "dots", "dots_no_batch"), help="default: the preset's")
    parser.add_argument("--attention", choices=("xla", "cudnn", "splash"),
                        help="default: xla ('cudnn': GPU, bf16; 'splash': TPU)")
    args = parser.parse_args(argv)
    model_preset, overrides, batch, seq, rollouts, prompt_len, new_tokens = SHAPES[args.preset]
    chosen = dict(param_dtype=args.param_dtype, remat=args.remat, attention=args.attention)
    overrides = {**overrides, **{k: v for k, v in chosen.items() if v is not None}}
    cfg = preset(model_preset, **overrides)
    dev = jax.devices()[0]
    on_gpu = dev.platform == "gpu"
    res: dict = dict(date=datetime.date.today().isoformat(), host=platform.node(),
                     device=f"{dev.platform}:{getattr(dev, 'device_kind', '?')}", num_devices=jax.device_count(),
                     jax=jax.__version__, preset=args.preset, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                     remat=cfg.remat, attention=cfg.attention, batch=batch, seq=seq, params_M=round(cfg.num_params() / 1e6, 1))
    peak = matmul_peak(jnp.dtype(cfg.dtype), 8192 if on_gpu else 1024)
    res["peak_tflops"] = round(peak / 1e12, 3)
    print(json.dumps(res), flush=True)
    mesh = make_mesh()
    if "steps" not in args.skip:
        res["steps"] = bench_steps(cfg, mesh, batch, seq, peak, args.repeats)
        print(json.dumps(res["steps"]), flush=True)
    if "ppo" not in args.skip:
        # ModelSource's own defaults (float32 compute) must not replace the preset's numerics
        numerics = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype, remat=cfg.remat, attention=cfg.attention)
        res["ppo"] = bench_ppo(model_preset, numerics, rollouts, prompt_len, new_tokens, mesh, args.ppo_warmup,
                               vocab=max(cfg.vocab_size, 300), repeats=args.repeats)
        print(json.dumps(res["ppo"]), flush=True)
    if os.environ.get("OUT"):
        tag = "".join(f"_{k}-{v}" for k, v in chosen.items() if v is not None)
        with open(os.path.join(os.environ["OUT"], f"train_bench_{args.preset}{tag}.json"), "w") as f:
            json.dump(res, f, indent=1)
    return res


if __name__ == "__main__":
    main()
