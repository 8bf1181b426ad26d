"""Typed configs of the PPO experiment (and its PPO-Lagrangian option) and their validation.

Defaults are the paper's hyperparameters (Xu et al., ICML 2024; /shared/PAPER_NOTES.md): actor lr
1e-5, critic lr 5e-6, 512 rollouts per iteration in 4 mini-batches, temperature 1, top-k 200,
gamma = lambda = 1, KL coefficient 0.1, reward clip 20, advantage and value normalization, value
clipping, EMA reference with eta = 0.001. Choices the paper does not state are marked *(ours)*.

The three tricks of Table 3 are one flag each (cumulative rows of the table):
    baseline PPO (batch 64)  --config.ppo.advantage_norm=false --config.ppo.large_batch=false
                             --config.ppo.ema_reference=false
    + adv. norm              --config.ppo.large_batch=false --config.ppo.ema_reference=false
    + large batch            --config.ppo.ema_reference=false
    + ref EMA                (the defaults)
`ppo.large_batch` picks `ppo.large_batch_size` (512) or `ppo.small_batch_size` (64) rollouts per
iteration; both are split into `ppo.mini_batches` optimizer steps per PPO epoch.

PPO-Lagrangian (safe-rlhf, Dai et al. 2024) is on when `cost` is set (e.g.
`--config.cost.source=model --config.cost.model.hf_path=/models/cost`): the multiplier follows
`rlhf_jax.losses.lagrange_update` on the batch's mean episode cost against `lagrangian.cost_limit`,
and the actor's advantage is (A_r - lambda A_c) / (1 + lambda) with a separate cost critic.
"""

from __future__ import annotations

import dataclasses
import math

import jax

from rlhf_jax.rollout import RolloutConfig
from rlhf_jax.sharding import MeshConfig, validate_mesh
from rlhf_jax.training.loop import LoopConfig
from rlhf_jax.training.selection import SelectionConfig
from rlhf_jax.training.sources import ModelSource
from rlhf_jax.training.state import OptimConfig


@dataclasses.dataclass(frozen=True)
class PromptData:
    """The RL prompt stream: a file read by `PROMPT_SOURCES[format]`, rendered with `template`."""

    format: str = "safe_rlhf"
    path: str = ""
    template: str = "safe_rlhf"
    max_prompt_length: int = 256  # prompts are left-padded (or truncated) to this many tokens
    code_prompt_style: str = "apps"  # for code prompt sources: rlhf_jax.rewards.PROMPT_STYLES


@dataclasses.dataclass(frozen=True)
class GenerationConfig:
    """Sampling of the rollouts (the end token is the tokenizer's EOS)."""

    max_new_tokens: int = 256  # dialogue; the paper uses 1024 for code
    temperature: float = 1.0
    top_k: int = 200
    top_p: float = 1.0


@dataclasses.dataclass(frozen=True)
class RewardConfig:
    """One scalar per response from `REWARD_SOURCES[source]` (rlhf_jax.training.ppo_rewards).

    "model": a LlamaForScore (`model`, loaded with a score head) on prompt + response;
    "apps_unit_tests": 10 / 0 from the APPS problems in `path` (code prompt sources);
    "word_count": +1 per occurrence of `word` in the response text (a toy task for tests).
    """

    source: str = "model"
    model: ModelSource = ModelSource()
    path: str = ""
    word: str = ""
    partial_credit: bool = False  # code: pass fraction instead of all-or-nothing *(not in paper)*
    timeout_s: float = 4.0  # code: per-test limit when the problem gives none


@dataclasses.dataclass(frozen=True)
class PPOSettings:
    """The PPO algorithm; see the module docstring for the Table 3 switches."""

    advantage_norm: bool = True  # trick 1: whiten advantages over the global batch
    large_batch: bool = True  # trick 2: large_batch_size instead of small_batch_size rollouts
    ema_reference: bool = True  # trick 3: the reference is an EMA of the actor
    reference_dtype: str = "float32"  # "bfloat16": a frozen reference kept in bf16, half the memory *(ours)*
    # optimizer states parked in pinned host memory while rolling out (generation, scoring, forwards),
    # back on the accelerator for the updates (rlhf_jax.training.offload) *(ours)*
    offload_optimizer: bool = False
    large_batch_size: int = 512
    small_batch_size: int = 64
    mini_batches: int = 4  # optimizer steps per PPO epoch (each actor and critic)
    micro_batches: int = 1  # gradient accumulation inside a mini-batch (memory only; exact)
    epochs: int = 1  # PPO epochs over each rollout batch *(ours)*
    ema_eta: float = 0.001  # ref <- (1 - eta) ref + eta actor after every actor step
    kl_coef: float = 0.1
    reward_clip: float | None = 20.0
    gamma: float = 1.0
    lam: float = 1.0
    clip_eps: float = 0.2  # *(ours)*
    dual_clip: float | None = None
    value_clip: float | None = 0.2  # value-loss clipping *(ours: the range)*
    value_norm: bool = True  # critic regresses running-normalized returns

    @property
    def rollout_batch_size(self) -> int:
        """Rollouts (prompts) per iteration, global."""
        return self.large_batch_size if self.large_batch else self.small_batch_size


@dataclasses.dataclass(frozen=True)
class LagrangianConfig:
    """PPO-Lagrangian multiplier (used only when `cost` is set); safe-rlhf's defaults."""

    cost_limit: float = 0.0  # the threshold d: mean episode cost must stay <= d
    lambda_init: float = 1.0
    lambda_lr: float = 0.1
    lambda_max: float | None = None


@dataclasses.dataclass(frozen=True)
class ValidationConfig:
    """Held-out prompts (read like `data`: same format and template) answered greedily every
    `loop.eval_every` iterations and after the last one, and scored by the reward source: metric
    "reward" is their mean score (with the APPS unit-test reward, 10 x the greedy pass rate), the
    paper's checkpoint-selection criterion. `num_prompts` must be a multiple of the rollout batch."""

    path: str = ""  # "": no validation
    num_prompts: int = 64


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """The whole experiment. Models: `actor` is the SFT model (also the initial reference);
    `critic` None means the reward model when `reward.source` is "model", else the actor's
    checkpoint with a fresh score head; `cost_critic` likewise from `cost`."""

    actor: ModelSource = ModelSource()
    critic: ModelSource | None = None
    cost_critic: ModelSource | None = None
    tokenizer_path: str = ""
    data: PromptData = PromptData()
    generation: GenerationConfig = GenerationConfig()
    reward: RewardConfig = RewardConfig()
    cost: RewardConfig | None = None
    lagrangian: LagrangianConfig = LagrangianConfig()
    ppo: PPOSettings = PPOSettings()
    actor_optim: OptimConfig = OptimConfig(lr=1e-5)
    critic_optim: OptimConfig = OptimConfig(lr=5e-6)
    mesh: MeshConfig = MeshConfig()
    loop: LoopConfig = LoopConfig(steps=1000, checkpoint_every=50)
    validation: ValidationConfig = ValidationConfig()
    selection: SelectionConfig = SelectionConfig()  # e.g. metric="reward": keep the best in workdir/best
    seed: int = 0
    workdir: str = "runs/ppo"


def critic_source(cfg: PPOConfig, *, cost: bool = False) -> ModelSource:
    """Where the (cost) critic starts: the explicit source, else the scoring model, else the actor."""
    explicit, scorer = (cfg.cost_critic, cfg.cost) if cost else (cfg.critic, cfg.reward)
    if explicit is not None:
        return explicit
    return scorer.model if scorer.source == "model" else cfg.actor


def rollout_config(cfg: GenerationConfig, *, eos_token_id: int | None, pad_token_id: int) -> RolloutConfig:
    """The sampler's RolloutConfig; its errors name the `generation.*` key."""
    try:
        return RolloutConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                             top_k=cfg.top_k, top_p=cfg.top_p, eos_token_id=eos_token_id,
                             pad_token_id=pad_token_id)
    except ValueError as e:
        raise ValueError(f"generation: {e}") from None


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _check_ppo(p: PPOSettings) -> None:
    for name in ("large_batch_size", "small_batch_size", "mini_batches", "micro_batches", "epochs"):
        value = getattr(p, name)
        _require(isinstance(value, int) and value >= 1, f"ppo.{name}={value!r} must be an int >= 1")
    _require(0.0 < p.ema_eta <= 1.0, f"ppo.ema_eta={p.ema_eta} must be in (0, 1]")
    _require(p.reference_dtype in ("float32", "bfloat16"),
             f"ppo.reference_dtype={p.reference_dtype!r}; choose 'float32' or 'bfloat16'")
    _require(p.reference_dtype == "float32" or not p.ema_reference,
             f"ppo.reference_dtype={p.reference_dtype!r} needs ppo.ema_reference=false: the EMA's small steps "
             f"(ppo.ema_eta={p.ema_eta}) would round away in bfloat16")
    _require(p.kl_coef >= 0.0, f"ppo.kl_coef={p.kl_coef} must be >= 0")
    _require(p.reward_clip is None or p.reward_clip > 0, f"ppo.reward_clip={p.reward_clip} must be > 0 or None")
    _require(0.0 <= p.gamma <= 1.0, f"ppo.gamma={p.gamma} must be in [0, 1]")
    _require(0.0 <= p.lam <= 1.0, f"ppo.lam={p.lam} must be in [0, 1]")
    _require(p.clip_eps > 0, f"ppo.clip_eps={p.clip_eps} must be > 0")
    _require(p.dual_clip is None or p.dual_clip > 1, f"ppo.dual_clip={p.dual_clip} must be > 1 or None")
    _require(p.value_clip is None or p.value_clip > 0, f"ppo.value_clip={p.value_clip} must be > 0 or None")
    batch = p.rollout_batch_size
    which = "large_batch_size" if p.large_batch else "small_batch_size"
    _require(batch % p.mini_batches == 0,
             f"ppo.{which}={batch} is not divisible by ppo.mini_batches={p.mini_batches}")
    _require((batch // p.mini_batches) % p.micro_batches == 0,
             f"a mini-batch of {batch // p.mini_batches} rollouts (ppo.{which} / ppo.mini_batches) is "
             f"not divisible by ppo.micro_batches={p.micro_batches}")


def _check_lagrangian(lag: LagrangianConfig) -> None:
    _require(lag.lambda_init > 0 and math.isfinite(lag.lambda_init),
             f"lagrangian.lambda_init={lag.lambda_init} must be > 0 (the multiplier is exp(log_lambda))")
    _require(lag.lambda_lr > 0, f"lagrangian.lambda_lr={lag.lambda_lr} must be > 0")
    _require(lag.lambda_max is None or lag.lambda_max >= lag.lambda_init,
             f"lagrangian.lambda_max={lag.lambda_max} must be >= lagrangian.lambda_init or None")


def validate(cfg: PPOConfig, mesh, *, prompt_sources, reward_sources) -> None:
    """Rejects a bad config before any model is built; every message names its key."""
    from rlhf_jax.data import TEMPLATES

    _check_ppo(cfg.ppo)
    if cfg.cost is not None:
        _check_lagrangian(cfg.lagrangian)
    _require(cfg.data.format in prompt_sources,
             f"data.format={cfg.data.format!r}; choose from {sorted(prompt_sources)}")
    _require(cfg.data.template in TEMPLATES,
             f"data.template={cfg.data.template!r}; choose from {sorted(TEMPLATES)}")
    _require(cfg.data.max_prompt_length >= 1, f"data.max_prompt_length={cfg.data.max_prompt_length} must be >= 1")
    for key, scorer in (("reward", cfg.reward), ("cost", cfg.cost)):
        if scorer is not None:
            _require(scorer.source in reward_sources,
                     f"{key}.source={scorer.source!r}; choose from {sorted(reward_sources)}")
    rollout_config(cfg.generation, eos_token_id=None, pad_token_id=0)
    batch = cfg.ppo.rollout_batch_size
    _require(batch % jax.process_count() == 0,
             f"{batch} rollouts per iteration do not split over {jax.process_count()} processes")
    micro = batch // cfg.ppo.mini_batches // cfg.ppo.micro_batches
    validate_mesh(mesh, batch_size=micro, what="ppo micro-batch (rollouts / mini_batches / micro_batches)")
    _require(micro % jax.process_count() == 0, "each PPO micro-batch must split evenly over the processes")
    v = cfg.validation
    if v.path:
        _require(v.num_prompts >= batch and v.num_prompts % batch == 0,
                 f"validation.num_prompts={v.num_prompts} must be a positive multiple of "
                 f"ppo.rollout_batch_size={batch} (validation rolls out whole batches)")
    if cfg.selection.metric is not None:
        _require(bool(v.path), f"selection.metric={cfg.selection.metric!r} needs validation.path")
        _require(cfg.selection.metric == "reward",
                 f"selection.metric={cfg.selection.metric!r}; PPO's validation metric is 'reward'")
