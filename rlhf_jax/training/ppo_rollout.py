"""PPO experience collection: the prompt stream, the rollout's sequences, the forwards, advantages.

One iteration (`experiments/ppo.py` drives it):

    prompts  = next(stream)                                  # prompt_ids/prompt_mask/example_index
    out      = sampler.generate(actor_params, prompts, ...)  # rlhf_jax.rollout
    seq      = rollout_sequences(out)                        # prompt (left-padded) + response
    scores   = reward_source(...)                            # [B], rlhf_jax.training.ppo_rewards
    old, ref = response_logps(actor), response_logps(ref)    # [B, N] log-probs of the response
    values   = response_values(critic)                       # [B, N] critic outputs
    exp      = compute_advantages(Stream(scores, values, norm), old, ref, mask, ppo=...)

Shapes: P = data.max_prompt_length (the sampler's only prompt bucket), N = max_new_tokens,
T = P + N. The log-prob of response token j sits at column P + j of the sequence; the critic's value
of the state before it is its output at column P + j - 1 (the last prompt token for j = 0).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import grain
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rlhf_jax.data import (
    PipelineConfig, read_alpaca, read_hh_rlhf, read_preference_jsonl, read_safe_rlhf, unique_prompts)
from rlhf_jax.data.batching import pad_id_of, prompt_row
from rlhf_jax.data.pipeline import ordered_examples
from rlhf_jax.data.schema import Conversation, decode_meta, encode_prompt, user_prompt
from rlhf_jax.data.tokenize import tokenize_prompt
from rlhf_jax.losses import (
    gae_advantages, kl_penalized_rewards, lagrange_update, lagrangian_advantages, masked_count,
    masked_mean, masked_sum, masked_whiten, value_normalizer as vn)
from rlhf_jax.training.logprobs import model_token_logps
from rlhf_jax.training.ppo_config import LagrangianConfig, PPOSettings, PromptData
from rlhf_jax.training.state import split_micro_batches

# ----------------------------------------------------------------------------- prompts
PromptList = list[tuple[Conversation, dict[str, Any]]]


def _distinct(prompts) -> PromptList:
    seen, out = set(), []
    for prompt in prompts:
        if prompt not in seen:
            seen.add(prompt)
            out.append((prompt, {}))
    return out


def _code_prompts(reader: str) -> Callable[[str, PromptData], PromptList]:
    """Prompts of the code problems with tests in a file read by `rlhf_jax.rewards.<reader>`."""
    def read(path: str, data: PromptData) -> PromptList:
        from rlhf_jax import rewards

        problems, _ = rewards.with_tests(getattr(rewards, reader)(path))
        return [(user_prompt(rewards.format_prompt(p, data.code_prompt_style)), {"problem_id": str(p.problem_id)})
                for p in problems]
    return read


PROMPT_SOURCES: dict[str, Callable[[str, PromptData], PromptList]] = {
    "alpaca": lambda path, data: [(e.prompt, {}) for e in read_alpaca(path)],
    "safe_rlhf": lambda path, data: [(p, {}) for p in unique_prompts(read_safe_rlhf(path))[0]],
    "hh_rlhf": lambda path, data: _distinct(p.prompt for p in read_hh_rlhf(path, "train")[0]),
    "preference_jsonl": lambda path, data: _distinct(p.prompt for p in read_preference_jsonl(path)),
    "apps": _code_prompts("read_apps"),  # meta {"problem_id"} for reward.source="apps_unit_tests"
    "code_contests": _code_prompts("read_code_contests"),  # ... for "code_contests_unit_tests"
}


def read_prompts(data: PromptData) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(stored prompt records, their metas): meta i is the prompt's own meta plus {"index": i}."""
    import os

    if data.format not in PROMPT_SOURCES:
        raise ValueError(f"data.format={data.format!r}; choose from {sorted(PROMPT_SOURCES)}")
    if not os.path.exists(data.path):
        raise FileNotFoundError(f"data.path={data.path!r} does not exist")
    prompts = PROMPT_SOURCES[data.format](data.path, data)
    if not prompts:
        raise ValueError(f"data.path={data.path!r}: no prompts")
    metas = [{**meta, "index": i} for i, (_, meta) in enumerate(prompts)]
    return [encode_prompt(conv, meta) for (conv, _), meta in zip(prompts, metas)], metas


def _indexed_prompt_row(tokenizer, template, pipe: PipelineConfig, pad_id: int, record) -> dict:
    row = prompt_row(tokenize_prompt(tokenizer, template, pipe.tokenize_config(), record),
                     pipe.max_prompt_length, pad_id)
    row["example_index"] = np.asarray(decode_meta(record)["index"], np.int32)
    return row


def prompt_stream(records, tokenizer, template, pipe: PipelineConfig) -> grain.IterDataset:
    """Batches of left-padded prompts (`prompt_ids`, `prompt_mask`, `num_truncated`) plus
    `example_index` (the row's index into `read_prompts`' lists): shuffled, repeated per `pipe`,
    sharded per process, checkpointable like `rlhf_jax.data.prompt_dataset`."""
    row = functools.partial(_indexed_prompt_row, tokenizer, template, pipe, pad_id_of(tokenizer))
    ds = ordered_examples(records, pipe).map(row).to_iter_dataset()
    return ds.batch(pipe.batch_size, drop_remainder=True)


# ----------------------------------------------------------------------------- forwards
def rollout_sequences(out) -> dict[str, jax.Array]:
    """A RolloutOutput as the training forwards read it: input_ids / attention_mask [B, P + N]
    and response_mask [B, N] (bool)."""
    ids, mask = out.sequences()
    return {"input_ids": ids, "attention_mask": mask, "response_mask": out.response_mask_BxN}


def in_chunks(fn: Callable, num_chunks: int, *arrays: jax.Array) -> jax.Array:
    """fn over `num_chunks` row chunks in sequence (`lax.map`); row i of the result is fn's row i.

    The chunks are strided (`split_micro_batches`: chunk c holds rows c, c + num_chunks, ...), so
    the results are interleaved back into the input's row order, not concatenated chunk after chunk.
    """
    if num_chunks == 1:
        return fn(*arrays)
    out = jax.lax.map(lambda xs: fn(*xs), split_micro_batches(arrays, num_chunks))  # [K, B / K, ...]
    return jnp.swapaxes(out, 0, 1).reshape((-1,) + out.shape[2:])


def response_logps(params, input_ids_BxT, attention_mask_BxT, *, graphdef, prompt_length: int,
                   num_chunks: int = 1) -> jax.Array:
    """[B, N] float32 log-probs of the response tokens under a LlamaForCausalLM."""
    model = nnx.merge(graphdef, params)

    def one(ids, mask):
        return model_token_logps(model, ids, mask)[:, prompt_length:]
    return in_chunks(one, num_chunks, input_ids_BxT, attention_mask_BxT)


def response_values(params, input_ids_BxT, attention_mask_BxT, *, graphdef, prompt_length: int,
                    num_chunks: int = 1) -> jax.Array:
    """[B, N] float32 critic outputs V(state before response token j), from a LlamaForScore."""
    model = nnx.merge(graphdef, params)
    length = input_ids_BxT.shape[1]

    def one(ids, mask):
        return model(ids, mask).values[:, prompt_length - 1:length - 1]
    return in_chunks(one, num_chunks, input_ids_BxT, attention_mask_BxT)


# ----------------------------------------------------------------------------- advantages
class Stream(NamedTuple):
    """One scalar signal (reward or cost) and its critic: per-response scores, the critic's raw
    outputs at rollout time [B, N] (normalized space when ppo.value_norm) and its normalizer."""

    scores_B: jax.Array
    critic_out_BxN: jax.Array
    value_norm: vn.ValueNormalizerState


class Experience(NamedTuple):
    """What the update steps read, besides the sequences (all [B, N] over response tokens)."""

    actor: dict[str, jax.Array]  # old_logps, advantages
    critic: dict[str, jax.Array]  # old_values, targets
    value_norm: vn.ValueNormalizerState
    metrics: dict[str, jax.Array]
    cost_critic: dict[str, jax.Array] | None = None
    cost_value_norm: vn.ValueNormalizerState | None = None
    log_lambda: jax.Array | None = None


def _stream_targets(rewards_BxN, stream: Stream, mask_BxN, ppo: PPOSettings, prefix: str):
    """GAE on one stream; critic batch (old outputs, targets in the critic's space) and norm."""
    norm = stream.value_norm
    values = vn.denormalize(norm, stream.critic_out_BxN) if ppo.value_norm else stream.critic_out_BxN
    adv, returns = gae_advantages(rewards_BxN, values, mask_BxN, gamma=ppo.gamma, lam=ppo.lam)
    if ppo.value_norm:
        norm = vn.update(norm, returns, mask_BxN)
        targets = vn.normalize(norm, returns)
    else:
        targets = returns
    metrics = {f"{prefix}return": masked_mean(returns, mask_BxN),
               f"{prefix}value": masked_mean(values, mask_BxN)}
    return adv, {"old_values": stream.critic_out_BxN, "targets": targets}, norm, metrics


def compute_advantages(reward: Stream, old_logps_BxN, ref_logps_BxN, mask_BxN, *, ppo: PPOSettings,
                       cost: Stream | None = None, log_lambda=None,
                       lagrangian: LagrangianConfig | None = None) -> Experience:
    """KL-shaped rewards, GAE, value normalization, (Lagrangian) and advantage normalization.

    Reward stream: r_t = -kl_coef (log pi_old - log pi_ref) + [t last] clip(score). PPO-Lagrangian
    (`cost` given): as safe-rlhf, first lambda <- lagrange_update on the mean episode cost, then a
    cost stream c_t = +kl_coef (log pi_old - log pi_ref) + [t last] clip(cost) so that the KL term
    survives the combination A = (A_r - lambda A_c) / (1 + lambda) whole (safe-rlhf splits it
    0.5 / 0.5, i.e. half our kl_coef). With ppo.advantage_norm, A is whitened over the global batch.
    """
    mask = jnp.asarray(mask_BxN).astype(bool)
    rewards = kl_penalized_rewards(reward.scores_B, old_logps_BxN, ref_logps_BxN, mask,
                                   kl_coef=ppo.kl_coef, reward_clip=ppo.reward_clip)
    adv, critic, norm, metrics = _stream_targets(rewards, reward, mask, ppo, "")
    log_ratio = jnp.where(mask, old_logps_BxN - ref_logps_BxN, 0.0)
    metrics.update(reward=jnp.mean(reward.scores_B), kl=masked_mean(log_ratio, mask),
                   kl_sequence=jnp.mean(masked_sum(log_ratio, mask, axis=1)),
                   response_length=jnp.mean(masked_count(mask, axis=1)))
    extra = {}
    if cost is not None:
        if lagrangian is None or log_lambda is None:
            raise ValueError("compute_advantages: a cost stream needs lagrangian and log_lambda")
        mean_cost = jnp.mean(cost.scores_B.astype(jnp.float32))
        log_lambda = lagrange_update(log_lambda, mean_cost, cost_limit=lagrangian.cost_limit,
                                     lr=lagrangian.lambda_lr, max_lambda=lagrangian.lambda_max)
        # swapping the two log-prob arguments flips the sign of the KL term
        costs = kl_penalized_rewards(cost.scores_B, ref_logps_BxN, old_logps_BxN, mask,
                                     kl_coef=ppo.kl_coef, reward_clip=ppo.reward_clip)
        cost_adv, cost_critic, cost_norm, cost_metrics = _stream_targets(costs, cost, mask, ppo, "cost_")
        adv = lagrangian_advantages(adv, cost_adv, jnp.exp(log_lambda))
        metrics.update(cost_metrics, cost=mean_cost, **{"lambda": jnp.exp(log_lambda)})
        extra = dict(cost_critic=cost_critic, cost_value_norm=cost_norm, log_lambda=log_lambda)
    metrics["advantage"] = masked_mean(adv, mask)
    if ppo.advantage_norm:
        adv = masked_whiten(adv, mask)
    actor = {"old_logps": old_logps_BxN, "advantages": jnp.where(mask, adv, 0.0)}
    return Experience(actor=actor, critic=critic, value_norm=norm, metrics=metrics, **extra)
