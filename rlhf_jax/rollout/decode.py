"""The decode loop: prefill a left-padded prompt block into a static KV cache, then sample one
token per step in a `lax.while_loop` that exits as soon as every row has finished.

Cache layout (S = P + N slots, the same for every row): slots [0, P) hold the prompt block, left
padded, written in one prefill call; slot P + i holds response token i. A padding slot is marked
invalid in `key_valid` and never attended to; positions count only valid tokens, so each row sees
exactly what it would see alone, and the layout equals `RolloutOutput.sequences()` fed to a training
forward, which is why the sampler's log-probs equal the trainer's.

Finished rows are frozen: from the step after their end token on, their input is written with mask
0 (an invalid key that nothing attends to), their outputs are the pad id with log-prob 0, and their
length stops growing. The computation of a frozen row is wasted but shapes stay static.

Everything here is traced inside one jitted program per (prompt bucket, batch size, `Program`):
`split_config` keeps in `Program` only what changes shapes or code (max_new_tokens, greedy, top_k,
whether top-p and EOS are on, how many stop tokens), and passes temperature, top_p and the token ids
as traced `Knobs`, so changing them does not recompile.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rlhf_jax.models.llama import KVCache, LlamaForCausalLM
from rlhf_jax.rollout.base import FinishReason, RolloutConfig, RolloutOutput
from rlhf_jax.rollout.sampling import sample_tokens
from rlhf_jax.sharding import constrain

KV_AXES = ("layers", "batch", "length", "act_kv_heads", None)  # logical axes of KVCache.k / .v


class Program(NamedTuple):
    """The static part of a RolloutConfig: one compiled program per value (and prompt shape)."""

    max_new_tokens: int
    greedy: bool
    top_k: int
    use_top_p: bool
    use_eos: bool
    num_stop_tokens: int


class Knobs(NamedTuple):
    """The traced part of a RolloutConfig (jax scalars; stop_token_ids is [num_stop_tokens])."""

    temperature: jax.Array
    top_p: jax.Array
    eos_token_id: jax.Array
    stop_token_ids: jax.Array
    pad_token_id: jax.Array


def split_config(config: RolloutConfig) -> tuple[Program, Knobs]:
    """(static program key, traced knobs); greedy programs ignore the sampling fields entirely."""
    program = Program(
        max_new_tokens=config.max_new_tokens, greedy=config.greedy,
        top_k=0 if config.greedy else config.top_k,
        use_top_p=not config.greedy and config.top_p < 1,
        use_eos=config.eos_token_id is not None, num_stop_tokens=len(config.stop_token_ids))
    knobs = Knobs(
        temperature=np.float32(config.temperature), top_p=np.float32(config.top_p),
        eos_token_id=np.int32(-1 if config.eos_token_id is None else config.eos_token_id),
        stop_token_ids=np.asarray(config.stop_token_ids, np.int32).reshape(-1),
        pad_token_id=np.int32(config.pad_token_id))
    return program, knobs


class _Loop(NamedTuple):
    step: jax.Array  # int32 scalar: the response column filled next
    cache: KVCache
    tokens_BxN: jax.Array
    logps_BxN: jax.Array
    sampling_logps_BxN: jax.Array
    done_B: jax.Array
    reason_B: jax.Array
    lengths_B: jax.Array


def _constrain_cache(cache: KVCache) -> KVCache:
    return cache._replace(k=constrain(cache.k, KV_AXES), v=constrain(cache.v, KV_AXES),
                          key_valid=constrain(cache.key_valid, ("batch", "length")))


def _record(loop: _Loop, logits_BxV: jax.Array, key: jax.Array, program: Program,
            knobs: Knobs) -> _Loop:
    """Samples column `loop.step` for the live rows and updates the end-of-row bookkeeping."""
    live_B = ~loop.done_B
    step_key = None if program.greedy else jax.random.fold_in(key, loop.step)
    tok_B, logp_B, slogp_B = sample_tokens(
        step_key, logits_BxV, greedy=program.greedy, temperature=knobs.temperature,
        top_k=program.top_k, top_p=knobs.top_p if program.use_top_p else 1.0)
    tok_B = jnp.where(live_B, tok_B, knobs.pad_token_id)
    logp_B = jnp.where(live_B, logp_B, 0.0)
    slogp_B = jnp.where(live_B, slogp_B, 0.0)

    def put(buf_BxN, col_B):
        return jax.lax.dynamic_update_slice(buf_BxN, col_B[:, None], (0, loop.step))

    no_B = jnp.zeros_like(live_B)
    eos_B = live_B & (tok_B == knobs.eos_token_id) if program.use_eos else no_B
    if program.num_stop_tokens:
        stop_B = live_B & ~eos_B & jnp.any(tok_B[:, None] == knobs.stop_token_ids[None, :], axis=-1)
    else:
        stop_B = no_B
    reason_B = jnp.where(eos_B, int(FinishReason.EOS),
                         jnp.where(stop_B, int(FinishReason.STOP), loop.reason_B))
    return _Loop(step=loop.step + 1, cache=loop.cache, tokens_BxN=put(loop.tokens_BxN, tok_B),
                 logps_BxN=put(loop.logps_BxN, logp_B),
                 sampling_logps_BxN=put(loop.sampling_logps_BxN, slogp_B),
                 done_B=loop.done_B | eos_B | stop_B, reason_B=reason_B.astype(jnp.int32),
                 lengths_B=loop.lengths_B + live_B.astype(jnp.int32))


def decode(model: LlamaForCausalLM, prompt_ids_BxP: jax.Array, prompt_mask_BxP: jax.Array,
           key: jax.Array, program: Program, knobs: Knobs) -> RolloutOutput:
    """Generates up to `program.max_new_tokens` tokens per row (to be called under `jax.jit`).

    Args:
      model: the policy (its params may be tracers).
      prompt_ids_BxP, prompt_mask_BxP: left-padded prompts; the last column must be valid in
        every row (the engine guarantees it).
      key: PRNG key; step i uses fold_in(key, i). Ignored when greedy.
      program, knobs: from `split_config(config)`.
    """
    B, P = prompt_ids_BxP.shape
    N = program.max_new_tokens
    mask_BxP = prompt_mask_BxP.astype(bool)
    cache = _constrain_cache(model.init_cache(B, P + N))
    hidden_BxPxD, cache = model.model(prompt_ids_BxP, mask_BxP, cache=cache)
    logits_BxV = model.logits_from_hidden(hidden_BxPxD[:, -1:])[:, 0]

    zeros_f32 = jnp.zeros((B, N), jnp.float32)
    loop = _Loop(step=jnp.zeros((), jnp.int32), cache=_constrain_cache(cache),
                 tokens_BxN=jnp.full((B, N), knobs.pad_token_id, jnp.int32),
                 logps_BxN=zeros_f32, sampling_logps_BxN=zeros_f32,
                 done_B=jnp.zeros((B,), bool),
                 reason_B=jnp.full((B,), int(FinishReason.LENGTH), jnp.int32),
                 lengths_B=jnp.zeros((B,), jnp.int32))
    loop = _record(loop, logits_BxV, key, program, knobs)

    def cond(loop: _Loop):
        return (loop.step < N) & ~jnp.all(loop.done_B)

    def body(loop: _Loop):
        prev_Bx1 = jax.lax.dynamic_slice_in_dim(loop.tokens_BxN, loop.step - 1, 1, axis=1)
        logits_Bx1xV, cache = model.forward_with_cache(prev_Bx1, loop.cache, ~loop.done_B[:, None])
        return _record(loop._replace(cache=_constrain_cache(cache)), logits_Bx1xV[:, 0], key, program,
                       knobs)

    loop = jax.lax.while_loop(cond, body, loop)
    response_mask_BxN = jnp.arange(N, dtype=jnp.int32)[None, :] < loop.lengths_B[:, None]
    return RolloutOutput(
        prompt_ids_BxP=prompt_ids_BxP, prompt_mask_BxP=mask_BxP, response_ids_BxN=loop.tokens_BxN,
        response_mask_BxN=response_mask_BxN, logps_BxN=loop.logps_BxN,
        sampling_logps_BxN=loop.sampling_logps_BxN, lengths_B=loop.lengths_B,
        finish_reason_B=loop.reason_B)
