"""PPO from an SFT model (Xu et al., ICML 2024), with PPO-Lagrangian as an option.

    python -m experiments.ppo --config.actor.hf_path=runs/sft_alpaca/hf_model \
        --config.tokenizer_path=runs/sft_alpaca/hf_model --config.reward.model.hf_path=runs/rm/hf_model \
        --config.data.format=safe_rlhf --config.data.path=/data/PKU-SafeRLHF/data/train.jsonl \
        --config.loop.steps=300 --config.workdir=runs/ppo_safe_rlhf

PPO-Lagrangian (safe-rlhf): add `--config.cost.source=model --config.cost.model.hf_path=runs/cm/hf_model
--config.lagrangian.cost_limit=0`. Code (APPS, unit-test reward 10 / 0): `--config.data.format=apps
--config.data.path=/data/apps/train.jsonl --config.reward.source=apps_unit_tests
--config.reward.path=/data/apps/train.jsonl --config.generation.max_new_tokens=1024`.
The Table 3 ablation is three flags, `ppo.advantage_norm`, `ppo.large_batch`, `ppo.ema_reference`
(rlhf_jax/training/ppo_config.py). `loop.steps` counts PPO iterations (one rollout batch each).

Each iteration: sample a batch of prompts, generate with the actor (temperature 1, top-k 200), score
each response (reward model or programmatic reward), compute old / reference log-probs and critic
values, KL-shaped rewards and GAE (`rlhf_jax.training.ppo_rollout`), then `ppo.epochs` passes of
`ppo.mini_batches` actor and critic steps (`ppo_steps`), the EMA reference following each actor
step. Writes Orbax checkpoints (actor, critics, optimizer states, the EMA reference, value
normalizers, lambda, RNG, prompt-iterator position; resumed automatically from `workdir`),
TensorBoard and JSONL metrics, and the final actor as a Hugging Face folder `workdir/hf_model`.
With `--config.validation.path=<held-out prompts> --config.selection.metric=reward`, greedy answers to
the held-out prompts are scored every `loop.eval_every` iterations and at the end, and the actor with
the best validation reward (for code: the greedy pass rate) is kept in `workdir/best`.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rlhf_jax import config as config_lib
from rlhf_jax.data import PipelineConfig, batch_iterator, get_template
from rlhf_jax.data.batching import pad_id_of
from rlhf_jax.losses import combine_metrics, value_normalizer as vn
from rlhf_jax.models import check_vocab, save_pretrained
from rlhf_jax.rollout import JaxSampler, PromptBatch
from rlhf_jax.sharding import make_mesh
from rlhf_jax.training import offload
from rlhf_jax.training.loop import RunContext
from rlhf_jax.training.ppo_config import PPOConfig, critic_source, rollout_config, validate
from rlhf_jax.training.ppo_rewards import (
    REWARD_SOURCES, ModelReward, RewardContext, RewardInputs, build_reward_source)
from rlhf_jax.training.ppo_rollout import (
    PROMPT_SOURCES, Stream, compute_advantages, prompt_stream, read_prompts, response_logps,
    response_values, rollout_sequences)
from rlhf_jax.training.ppo_steps import (
    PPOState, actor_step, checkpoint_tree, counted_jit, critic_step, ema_step, from_checkpoint_tree,
    minibatch_indices, settle)
from rlhf_jax.training.selection import BestCheckpoint
from rlhf_jax.training.sources import build_model, build_tokenizer
from rlhf_jax.training.state import cast_copy, init_train_state, make_optimizer, on_mesh_of, split_model


def get_config(preset_name: str | None = None) -> PPOConfig:
    """The paper's PPO settings (no presets; set fields with --config.*)."""
    if preset_name is not None:
        raise ValueError(f"experiments.ppo has no preset {preset_name!r}; set fields with --config.*")
    return PPOConfig()


def _critic(cfg: PPOConfig, ctx: RewardContext, scorer, *, cost: bool):
    """(graphdef, params) of a critic: a copy of the scoring model's weights when it is the source."""
    explicit = cfg.cost_critic if cost else cfg.critic
    if explicit is None and isinstance(scorer, ModelReward):
        return scorer.graphdef, jax.tree.map(jnp.copy, scorer.params)
    model = build_model(critic_source(cfg, cost=cost), mesh=ctx.mesh, head="score",
                        vocab_size=len(ctx.tokenizer), key="cost_critic" if cost else "critic")
    check_vocab(ctx.tokenizer, model.cfg, source="cost_critic" if cost else "critic")
    return split_model(model)


_TRAINED = ("actor", "critic", "cost_critic")


def _park_optimizers(state: PPOState) -> tuple[PPOState, dict]:
    """`state` with the trained models' optimizer states in host memory, and where they came from."""
    moved, where = {}, {}
    for name in _TRAINED:
        train_state = getattr(state, name)
        if train_state is not None:
            host, where[name] = offload.to_host(train_state.opt_state)
            moved[name] = train_state._replace(opt_state=host)
    return state._replace(**moved), where


def _unpark_optimizers(state: PPOState, where: dict) -> PPOState:
    return state._replace(**{name: getattr(state, name)._replace(
        opt_state=offload.to_device(getattr(state, name).opt_state, w)) for name, w in where.items()})


def _prefixed(prefix: str, metrics: dict) -> dict:
    return {prefix + ("tokens" if k == "count" else k): v for k, v in metrics.items()}


class PPORunner:
    """The models and the jitted programs of one run; `iteration` is one PPO iteration.

    `initial_state` is the state before any training (actor = SFT model, critics from the scoring
    models, lambda = lagrangian.lambda_init); `main` takes it to restore into, then drops it.
    """

    def __init__(self, cfg: PPOConfig, mesh, tokenizer):
        self.cfg, self.mesh, self.lagrangian = cfg, mesh, cfg.cost is not None
        self.traces: collections.Counter = collections.Counter()
        p = cfg.ppo
        if p.offload_optimizer and not offload.host_memory_available():
            raise ValueError(f"ppo.offload_optimizer=true: these devices ({jax.devices()[0].platform}) have "
                             f"no {offload.HOST!r} memory to park the optimizer states in")
        # reward / cost models score a rollout batch in the chunks the log-prob passes use
        ctx = RewardContext(mesh, tokenizer, self.traces, score_chunks=p.mini_batches * p.micro_batches)
        self.reward = build_reward_source(cfg.reward, ctx, key="reward")
        self.cost = build_reward_source(cfg.cost, ctx, key="cost") if self.lagrangian else None
        actor = build_model(cfg.actor, mesh=mesh, vocab_size=len(tokenizer), key="actor")
        check_vocab(tokenizer, actor.cfg, source=cfg.actor.hf_path or "actor.preset")
        P = cfg.data.max_prompt_length
        self.sampler = JaxSampler(actor, mesh=mesh, prompt_buckets=(P,))
        self.rollout_cfg = rollout_config(cfg.generation, eos_token_id=tokenizer.eos_token_id,
                                          pad_token_id=pad_id_of(tokenizer))
        self.actor_graphdef, actor_params = split_model(actor)
        critic_graphdef, critic_params = _critic(cfg, ctx, self.reward, cost=False)
        self.actor_tx, critic_tx = make_optimizer(cfg.actor_optim), make_optimizer(cfg.critic_optim)
        on_mesh = functools.partial(on_mesh_of, actor_params)
        self.initial_state = PPOState(
            actor=init_train_state(actor_params, self.actor_tx),
            critic=init_train_state(critic_params, critic_tx),
            ref_params=cast_copy(actor_params, cfg.ppo.reference_dtype),
            value_norm=on_mesh(vn.init()),
            rng=on_mesh(jax.random.key(cfg.seed)))
        chunks = dict(prompt_length=P, num_chunks=p.mini_batches * p.micro_batches)
        jit = functools.partial(counted_jit, traces=self.traces)
        self.logps_fn = jit(functools.partial(response_logps, graphdef=self.actor_graphdef, **chunks),
                            name="actor_logps")
        self.values_fn = jit(functools.partial(response_values, graphdef=critic_graphdef, **chunks),
                             name="critic_values")
        self.advantages_fn = jit(functools.partial(
            compute_advantages, ppo=p, lagrangian=cfg.lagrangian if self.lagrangian else None),
            name="advantages")
        self.actor_fn = jit(functools.partial(
            actor_step, graphdef=self.actor_graphdef, tx=self.actor_tx, prompt_length=P,
            clip_eps=p.clip_eps, dual_clip=p.dual_clip, num_micro=p.micro_batches),
            name="actor_step", donate_argnums=(0,))
        critic = functools.partial(critic_step, prompt_length=P, value_clip=p.value_clip,
                                   num_micro=p.micro_batches)
        self.critic_fn = jit(functools.partial(critic, graphdef=critic_graphdef, tx=critic_tx),
                             name="critic_step", donate_argnums=(0,))
        self.ema_fn = jit(functools.partial(ema_step, eta=p.ema_eta), name="ema_step", donate_argnums=(0,))
        if self.lagrangian:
            cost_graphdef, cost_params = _critic(cfg, ctx, self.cost, cost=True)
            self.cost_values_fn = jit(functools.partial(response_values, graphdef=cost_graphdef, **chunks),
                                      name="cost_critic_values")
            self.cost_critic_fn = jit(functools.partial(critic, graphdef=cost_graphdef, tx=critic_tx),
                                      name="cost_critic_step", donate_argnums=(0,))
            self.initial_state = self.initial_state._replace(
                cost_critic=init_train_state(cost_params, critic_tx), cost_value_norm=on_mesh(vn.init()),
                log_lambda=on_mesh(jnp.asarray(math.log(cfg.lagrangian.lambda_init), jnp.float32)))

    def iteration(self, state: PPOState, prompts: dict, metas: list, it: int, *,
                  phase: Callable[[str, Callable], Any] | None = None) -> tuple[PPOState, dict]:
        """Rollout, scoring, advantages and the PPO epochs for one batch of prompts.

        The critic values and the actor / reference log-probs are dispatched before the rewards are
        computed, so on an accelerator they run while the host scores the responses (decoding,
        sandboxed unit tests). `phase(name, fn)`, when given, runs each phase (`fn()`) and returns
        its result: `bench/train_bench.py` times this very iteration phase by phase with it.
        """
        cfg, p = self.cfg, self.cfg.ppo
        run = phase or (lambda name, fn: fn())
        parked = {}
        if p.offload_optimizer:  # the rollout phase does not need them: its KV cache gets the memory
            state, parked = run("optimizer to host", lambda: _park_optimizers(state))
        rng, key = jax.random.split(state.rng)
        self.sampler.update_params(state.actor.params)  # one sampling copy of the actor, replaced
        out = run("generation", lambda: settle(self.sampler.generate(
            None, PromptBatch(prompts["prompt_ids"], prompts["prompt_mask"]), self.rollout_cfg, key=key)))
        seq = rollout_sequences(out)
        ids, mask = seq["input_ids"], seq["attention_mask"]
        values = run("critic values", lambda: self.values_fn(state.critic.params, ids, mask))
        if self.lagrangian:
            cost_values = run("cost critic values",
                              lambda: self.cost_values_fn(state.cost_critic.params, ids, mask))
        old_logps = run("actor log-probs", lambda: self.logps_fn(state.actor.params, ids, mask))
        ref_logps = run("reference log-probs", lambda: self.logps_fn(state.ref_params, ids, mask))
        inputs = RewardInputs(ids, mask, out.response_ids_BxN, out.response_mask_BxN,
                              [metas[i] for i in prompts["example_index"]])
        reward = Stream(run("scoring", lambda: self.reward(inputs)), values, state.value_norm)
        cost = None
        if self.lagrangian:
            cost = Stream(run("cost scoring", lambda: self.cost(inputs)), cost_values, state.cost_value_norm)
        exp = run("advantages", lambda: self.advantages_fn(
            reward, old_logps, ref_logps, seq["response_mask"], cost=cost, log_lambda=state.log_lambda))
        if parked:
            state = run("optimizer to device", lambda: _unpark_optimizers(state, parked))
        actor, critic, ref, cost_critic = state.actor, state.critic, state.ref_params, state.cost_critic
        logs = collections.defaultdict(list)
        for epoch in range(p.epochs):
            for idx in minibatch_indices(p.rollout_batch_size, p.mini_batches, seed=cfg.seed, iteration=it,
                                         epoch=epoch):
                actor, m = run("actor updates", lambda: self.actor_fn(actor, seq, exp.actor, idx))
                logs["actor/"].append(m)
                if p.ema_reference:
                    ref = run("EMA reference", lambda: self.ema_fn(ref, actor.params))
                critic, m = run("critic updates", lambda: self.critic_fn(critic, seq, exp.critic, idx))
                logs["critic/"].append(m)
                if self.lagrangian:
                    cost_critic, m = run("cost critic updates",
                                         lambda: self.cost_critic_fn(cost_critic, seq, exp.cost_critic, idx))
                    logs["cost_critic/"].append(m)
        state = PPOState(actor, critic, ref, exp.value_norm, rng, cost_critic, exp.cost_value_norm,
                         exp.log_lambda)
        metrics = dict(exp.metrics)
        for prefix, ms in logs.items():
            metrics.update(_prefixed(prefix, combine_metrics(ms)))
        return state, metrics

    def validate(self, state: PPOState, batches, metas: list) -> dict[str, float]:
        """Mean reward of greedy answers to the held-out prompt batches (see ValidationConfig)."""
        greedy = dataclasses.replace(self.rollout_cfg, greedy=True)
        total, count = 0.0, 0
        self.sampler.update_params(state.actor.params)
        for prompts in batches:
            out = settle(self.sampler.generate(None, PromptBatch(
                prompts["prompt_ids"], prompts["prompt_mask"]), greedy))
            seq = rollout_sequences(out)
            scores = np.asarray(jax.device_get(self.reward(RewardInputs(
                seq["input_ids"], seq["attention_mask"], out.response_ids_BxN, out.response_mask_BxN,
                [metas[i] for i in prompts["example_index"]]))))
            total, count = total + float(scores.sum()), count + scores.size
        return {"reward": total / count, "count": float(count)}

    def compilations(self) -> dict[str, int]:
        """Traces so far of every jitted program of the run, the sampler's included."""
        return dict(self.traces, rollout=self.sampler.num_compilations)


def _validation_batches(cfg: PPOConfig, tokenizer, pipe: PipelineConfig):
    """(prompt batches, metas) of the first `validation.num_prompts` held-out prompts, in order."""
    if not cfg.validation.path:
        return None
    records, metas = read_prompts(dataclasses.replace(cfg.data, path=cfg.validation.path))
    n = cfg.validation.num_prompts
    if len(records) < n:
        raise ValueError(f"validation.path={cfg.validation.path!r} holds {len(records)} prompts, "
                         f"fewer than validation.num_prompts={n}")
    once = dataclasses.replace(pipe, shuffle=False, num_epochs=1)
    batches = list(prompt_stream(records[:n], tokenizer, get_template(cfg.data.template), once))
    return batches, metas[:n]


def main(cfg: PPOConfig) -> dict:
    """Runs (or resumes) PPO; returns the final state, the exported model folder, whether SIGTERM
    stopped it, and the per-iteration compilation counts of every jitted program."""
    mesh = make_mesh(cfg.mesh)
    validate(cfg, mesh, prompt_sources=PROMPT_SOURCES, reward_sources=REWARD_SOURCES)
    tokenizer = build_tokenizer(cfg.tokenizer_path)
    records, metas = read_prompts(cfg.data)
    P = cfg.data.max_prompt_length
    pipe = PipelineConfig(batch_size=cfg.ppo.rollout_batch_size // jax.process_count(),
                          max_length=P + cfg.generation.max_new_tokens, max_prompt_length=P,
                          seed=cfg.seed, num_epochs=None)
    stream = prompt_stream(records, tokenizer, get_template(cfg.data.template), pipe)
    runner = PPORunner(cfg, mesh, tokenizer)
    ema = cfg.ppo.ema_reference
    run = RunContext(cfg.workdir, cfg.loop)
    tree, meta, start = run.restore_or(checkpoint_tree(runner.initial_state, ema_reference=ema),
                                       data_state=None)
    state = from_checkpoint_tree(runner.initial_state, tree)
    runner.initial_state = None  # after a restore, nothing may keep the initial arrays alive
    runner.sampler.update_params(state.actor.params)
    batches = batch_iterator(stream, meta["data_state"])
    validation = _validation_batches(cfg, tokenizer, pipe)
    best = None
    if cfg.selection.metric is not None:
        best = BestCheckpoint(cfg.workdir, cfg.selection)
        best.restore(meta.get("selection"))
    compilations = []
    with jax.set_mesh(mesh):
        for it in run.steps(start):
            state, metrics = runner.iteration(state, next(batches), metas, it)
            if validation is not None and (it == cfg.loop.steps or (
                    cfg.loop.eval_every and it % cfg.loop.eval_every == 0)):
                scores = runner.validate(state, *validation)
                run.log(it, scores, prefix="eval")
                if best is not None:  # before `record`, so a checkpoint here holds the selection
                    best.update(it, scores, lambda: nnx.merge(runner.actor_graphdef, state.actor.params),
                                tokenizer=tokenizer)
            run.record(it, metrics, save=lambda: (checkpoint_tree(state, ema_reference=ema), {
                "data_state": batches.get_state(), "selection": None if best is None else best.state_dict()}))
            compilations.append(runner.compilations())
    run.finish()
    out_dir = os.path.join(cfg.workdir, "hf_model")
    save_pretrained(nnx.merge(runner.actor_graphdef, state.actor.params), out_dir, tokenizer=tokenizer)
    print(f"saved {out_dir}")
    return {"state": state, "hf_model": out_dir, "stopped_early": run.stopped_early,
            "compilations": compilations, "best": None if best is None else best.best}


if __name__ == "__main__":
    config_lib.run(get_config, main)
