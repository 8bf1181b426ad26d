"""The paper's settings (Xu et al., ICML 2024) as named presets, and hardware layouts.

    python -m experiments.ppo --config=llama2-7b-saferlhf-ppo@h100x8 \
        --config.actor.hf_path=runs/sft_alpaca/hf_model --config.tokenizer_path=runs/sft_alpaca/hf_model \
        --config.critic.hf_path=runs/rm_safe/hf_model --config.reward.model.hf_path=runs/rm_safe/hf_model \
        --config.data.path=/data/PKU-SafeRLHF-30K/train.jsonl.xz
    python -m experiments.dry_run --config.preset=llama2-7b-saferlhf-ppo --config.layout=h100x8

A preset is an experiment module and the `--config.key=value` overrides that turn its defaults into
the paper's setting (`PRESETS`, printed by `preset_flags`); `--config=NAME@LAYOUT` also applies a
hardware layout (`LAYOUTS`: mesh axes, activation remat, micro-batches), `--config=NAME` the
preset's default layout. Later `--config.*` flags override both. Paths (checkpoints, tokenizer,
data) are left empty: the experiment stops with an error naming the key until they are set.
Hyperparameters are the paper's (../shared/PAPER_NOTES.md); those it does not state are marked
*(ours)* where they are set. Models compute in bf16 with float32 trained weights; frozen reward and
cost models are loaded in bf16 (`param_dtype`), and a PPO critic that starts from the reward model
loads the same checkpoint again in float32 (`critic.hf_path`).

Not covered: CodeContests (no PPO / iterative-DPO prompt or reward source reads it yet) and SFT on
HH-RLHF or APPS (no SFT reader for them in `sources.SFT_SOURCES`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from rlhf_jax.sharding import MeshConfig


@dataclasses.dataclass(frozen=True)
class Layout:
    """A slice of hardware and how a run is laid out on it.

    `rows_per_device`: sequences (pairs count twice: chosen and rejected) each (data, fsdp) shard
    holds per micro-batch; the micro-batch count follows from the batch."""

    devices: int
    mesh: MeshConfig
    device_memory_gib: float
    remat: str = "full"
    rows_per_device: int = 2
    about: str = ""


LAYOUTS: dict[str, Layout] = {
    "h100x8": Layout(8, MeshConfig(1, 8, 1), 80.0, about="one 8xH100 host, fsdp over its 8 GPUs"),
    "h100x16": Layout(16, MeshConfig(1, 2, 8), 80.0,
                      about="two 8xH100 hosts: tensor parallel inside a host (NVLink), fsdp across"),
    "h100x32": Layout(32, MeshConfig(1, 4, 8), 80.0,
                      about="four 8xH100 hosts: tensor parallel inside a host, fsdp across"),
    "tpu-v4-32": Layout(16, MeshConfig(1, 16, 1), 32.0, rows_per_device=1,
                        about="TPU v4-32 slice: 16 chips of 32 GiB, fsdp over all"),
    "tpu-v5p-64": Layout(32, MeshConfig(1, 32, 1), 95.0,
                         about="TPU v5p-64 slice: 32 chips of 95 GiB, fsdp over all"),
    "tpu-v5e-64": Layout(64, MeshConfig(1, 16, 4), 16.0, rows_per_device=1,
                         about="TPU v5e-64 slice: 64 chips of 16 GiB, fsdp 16 x tensor 4"),
}


@dataclasses.dataclass(frozen=True)
class Preset:
    experiment: str  # the experiment module, e.g. "experiments.ppo"
    overrides: dict[str, Any]  # config key -> value, as --config.key=value would set it
    layout: str  # the default layout
    about: str


PAIRED = ("experiments.reward_model", "experiments.dpo", "experiments.iterative_dpo")


def models_in_use(experiment: str, cfg: Any) -> dict[str, Any]:
    """Config key -> ModelSource of every model experiment config `cfg` loads."""
    if experiment == "experiments.ppo":
        out = {"actor": cfg.actor, "critic": cfg.critic, "cost_critic": cfg.cost_critic}
        out["reward.model"] = cfg.reward.model if cfg.reward.source == "model" else None
        out["cost.model"] = cfg.cost.model if cfg.cost is not None and cfg.cost.source == "model" else None
    elif experiment == "experiments.iterative_dpo":
        out = {"model": cfg.model, "labeler.model": cfg.labeler.model if cfg.labeler.name == "reward_model" else None}
    else:
        out = {"model": cfg.model}
    return {k: v for k, v in out.items() if v is not None}


def _model(key: str, arch: str, *, frozen: bool = False) -> dict[str, Any]:
    """A checkpoint to load (path left for the user) of architecture `arch`, bf16 compute."""
    out = {f"{key}.hf_path": "", f"{key}.preset": arch, f"{key}.dtype": "bfloat16"}
    if frozen:
        out[f"{key}.param_dtype"] = "bfloat16"
    return out


def _sft(arch: str, fmt: str, template: str) -> dict[str, Any]:
    return {**_model("model", arch), "tokenizer_path": "", "data.format": fmt, "data.path": "",
            "data.template": template}


def _score(arch: str, kind: str, fmt: str, template: str) -> dict[str, Any]:
    return {**_sft(arch, fmt, template), "kind": kind}


def _dpo(arch: str, fmt: str, template: str, *, epochs: int, pairs: int, batch: int = 64) -> dict[str, Any]:
    # lr 1e-6, beta 0.1 (paper); batch 64 *(ours)*; steps = epochs over `pairs` (approximate split size)
    return {**_sft(arch, fmt, template), "dpo.beta": 0.1, "optim.lr": 1e-6, "batch_size": batch,
            "loop.steps": math.ceil(epochs * pairs / batch)}


def _iterative(arch: str, fmt: str, template: str, labeler: dict[str, Any], *, new_tokens: int,
               samples: int, rounds: int) -> dict[str, Any]:
    return {**_model("model", arch), "tokenizer_path": "", "prompts.format": fmt, "prompts.path": "",
            "prompts.template": template, "dpo.beta": 0.1, "optim.lr": 1e-6, "rounds": rounds,
            "sampling.samples_per_prompt": samples, "sampling.max_new_tokens": new_tokens,
            "sampling.temperature": 1.0, "prompts.max_length": 256 + new_tokens, **labeler}


def _ppo(arch: str, fmt: str, template: str, reward: dict[str, Any], *, new_tokens: int, epochs: int,
         prompts: int, prompt_len: int = 256) -> dict[str, Any]:
    # batch 512 in 4 mini-batches, temperature 1, top-k 200, gamma = lambda = 1, KL 0.1, reward clip 20,
    # EMA reference, actor lr 1e-5, critic lr 5e-6 (paper; the PPOConfig defaults, restated here)
    return {**_model("actor", arch), "tokenizer_path": "", "data.format": fmt, "data.path": "",
            "data.template": template, "data.max_prompt_length": prompt_len,
            "generation.max_new_tokens": new_tokens, "generation.temperature": 1.0, "generation.top_k": 200,
            "ppo.large_batch_size": 512, "ppo.mini_batches": 4, "ppo.gamma": 1.0, "ppo.lam": 1.0,
            "ppo.kl_coef": 0.1, "ppo.reward_clip": 20.0, "ppo.advantage_norm": True, "ppo.large_batch": True,
            "ppo.ema_reference": True, "actor_optim.lr": 1e-5, "critic_optim.lr": 5e-6,
            "loop.steps": math.ceil(epochs * prompts / 512), **reward}


def _reward_model(arch: str) -> dict[str, Any]:
    """The reward model (frozen, bf16) and a critic loaded from the same checkpoint in float32."""
    return {"reward.source": "model", **_model("reward.model", arch, frozen=True), **_model("critic", arch)}


SAFE, HH = "safe_rlhf", "hh"
_SAFE_PAIRS, _HH_PAIRS = 27_000, 160_800  # approximate training pairs of PKU-SafeRLHF-30K and HH-RLHF
_SAFE_PROMPTS, _HH_PROMPTS, _APPS_PROBLEMS = 27_000, 160_000, 5_000  # (upper bounds on distinct prompts)
_CODE_CONTESTS_PROBLEMS = 13_328  # CodeContests train


def _paper_presets() -> dict[str, Preset]:
    p: dict[str, Preset] = {}
    a = "llama2-7b"
    p["llama2-7b-saferlhf-sft-alpaca"] = Preset("experiments.sft", _sft(a, "alpaca", SAFE), "h100x8",
                                                "SFT(Alpaca): the reference of Table 2 (SFT settings ours)")
    p["llama2-7b-saferlhf-sft-safe"] = Preset("experiments.sft", _sft(a, "safe_rlhf_safe", SAFE), "h100x8",
                                              "SFT(Safe): SFT(Alpaca) further tuned on the safe responses")
    p["llama2-7b-saferlhf-reward"] = Preset("experiments.reward_model", _score(a, "reward", "safe_rlhf_helpful", SAFE),
                                            "h100x8", "reward model on the more-helpful labels")
    p["llama2-7b-saferlhf-cost"] = Preset("experiments.reward_model", _score(a, "cost", "safe_rlhf_safer", SAFE),
                                          "h100x8", "cost model (safe-rlhf's loss) on the safer labels")
    for suffix, fmt, what in (("", "safe_rlhf", "DPO on the merged preference"),
                              ("-no-dual-unsafe", "safe_rlhf_no_dual_unsafe", "DPO, dual-unsafe pairs dropped"),
                              ("-no-dual", "safe_rlhf_no_dual", "DPO, dual-unsafe and dual-safe pairs dropped")):
        p[f"llama2-7b-saferlhf-dpo{suffix}"] = Preset(
            "experiments.dpo", _dpo(a, fmt, SAFE, epochs=2, pairs=_SAFE_PAIRS), "h100x8", f"{what} (Table 2)")
    rm = {"labeler.name": "reward_model", **_model("labeler.model", a, frozen=True)}
    p["llama2-7b-saferlhf-iterative-dpo"] = Preset(
        "experiments.iterative_dpo", _iterative(a, "safe_rlhf", SAFE, rm, new_tokens=256, samples=4, rounds=4),
        "h100x8", "DPO-Iter, 4 rounds labelled by the reward model (k=4 samples ours)")
    p["llama2-7b-saferlhf-ppo"] = Preset(
        "experiments.ppo", _ppo(a, "safe_rlhf", SAFE, _reward_model(a), new_tokens=256, epochs=5,
                                prompts=_SAFE_PROMPTS), "h100x8", "PPO with the reward model")
    lag = {**_reward_model(a), "cost.source": "model", **_model("cost.model", a, frozen=True),
           **_model("cost_critic", a), "lagrangian.cost_limit": 0.0}
    p["llama2-7b-saferlhf-ppo-lagrangian"] = Preset(
        "experiments.ppo", _ppo(a, "safe_rlhf", SAFE, lag, new_tokens=256, epochs=5, prompts=_SAFE_PROMPTS),
        "h100x8", "PPO-Lagrangian with reward and cost models (safe-rlhf)")
    p["llama2-7b-hh-reward"] = Preset("experiments.reward_model", _score(a, "reward", "hh_rlhf", HH), "h100x8",
                                      "reward model on HH-RLHF")
    p["llama2-7b-hh-dpo"] = Preset("experiments.dpo", _dpo(a, "hh_rlhf", HH, epochs=2, pairs=_HH_PAIRS), "h100x8",
                                   "DPO on HH-RLHF (Table 4)")
    p["llama2-7b-hh-iterative-dpo"] = Preset(
        "experiments.iterative_dpo", _iterative(a, "hh_rlhf", HH, rm, new_tokens=256, samples=4, rounds=4),
        "h100x8", "DPO-Iter on HH-RLHF prompts (Table 4)")
    p["llama2-7b-hh-ppo"] = Preset(
        "experiments.ppo", _ppo(a, "hh_rlhf", HH, _reward_model(a), new_tokens=256, epochs=5, prompts=_HH_PROMPTS),
        "h100x8", "PPO on HH-RLHF (Table 4)")
    tests = {"labeler.name": "unit_tests", "pair_rule": "apps_tests"}
    for size, layout in (("7b", "h100x16"), ("13b", "h100x16"), ("34b", "h100x32")):
        c = f"codellama-{size}"
        p[f"{c}-apps-ppo"] = Preset(
            "experiments.ppo", _ppo(c, "apps", "alpaca", {"reward.source": "apps_unit_tests", "reward.path": ""},
                                    new_tokens=1024, epochs=16, prompts=_APPS_PROBLEMS, prompt_len=512),
            layout, "PPO on APPS, reward 10 if every unit test passes (Table 7; prompt length 512 ours)")
        p[f"{c}-apps-iterative-dpo"] = Preset(
            "experiments.iterative_dpo", dict(_iterative(c, "apps", "alpaca", tests, new_tokens=1024, samples=5,
                                                         rounds=4), **{"prompts.max_length": 1536,
                                                                       "prompts.max_prompt_length": 512,
                                                                       "sampling.batch_size": 160}),
            layout, "DPO-Iter on APPS: 5 programs per problem labelled by the tests (Table 7; 4 rounds ours)")
    # CodeContests (Table 8: CodeLlama-34B); descriptions are long, so prompts get 1024 tokens (ours)
    p["codellama-34b-codecontests-ppo"] = Preset(
        "experiments.ppo", _ppo("codellama-34b", "code_contests", "alpaca",
                                {"reward.source": "code_contests_unit_tests", "reward.path": ""}, new_tokens=1024,
                                epochs=16, prompts=_CODE_CONTESTS_PROBLEMS, prompt_len=1024),
        "h100x32", "PPO on CodeContests, reward 10 if every test passes (Table 8; prompt length 1024 ours)")
    p["codellama-34b-codecontests-iterative-dpo"] = Preset(
        "experiments.iterative_dpo", dict(_iterative("codellama-34b", "code_contests", "alpaca", tests,
                                                     new_tokens=1024, samples=5, rounds=4),
                                          **{"prompts.max_length": 2048, "prompts.max_prompt_length": 1024,
                                             "sampling.batch_size": 160}),
        "h100x32", "DPO-Iter on CodeContests: programs labelled by the tests (Table 8; k=5, 4 rounds ours)")
    return p


PRESETS: dict[str, Preset] = _paper_presets()


def presets_for(experiment: str) -> dict[str, Preset]:
    return {name: p for name, p in PRESETS.items() if p.experiment == experiment}


def to_text(value: Any) -> str:
    """A value as `--config.key=` text (what `rlhf_jax.config.parse_value` reads back)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, (tuple, list)):
        return ",".join(to_text(v) for v in value)
    return str(value)


def split_name(name: str) -> tuple[str, str | None]:
    """'PRESET@LAYOUT' -> (PRESET, LAYOUT); 'PRESET' -> (PRESET, None)."""
    preset, _, layout = name.partition("@")
    return preset, layout or None


def layout_overrides(experiment: str, cfg: Any, layout_name: str) -> list[tuple[str, str]]:
    """Overrides putting experiment config `cfg` on layout `layout_name`: mesh axes, remat of every
    model it loads, and the micro-batch count for `rows_per_device` rows per (data, fsdp) shard."""
    if layout_name not in LAYOUTS:
        raise ValueError(f"layout {layout_name!r} is unknown; choose from {sorted(LAYOUTS)}")
    layout = LAYOUTS[layout_name]
    out = [(f"mesh.{axis}", str(getattr(layout.mesh, axis))) for axis in ("data", "fsdp", "tensor")]
    models = models_in_use(experiment, cfg)
    out += [(f"{key}.remat", layout.remat) for key in models]
    if experiment == "experiments.ppo":  # rows of one mini-batch
        key, units, weight = "ppo.micro_batches", cfg.ppo.rollout_batch_size // cfg.ppo.mini_batches, 1
    else:  # a pair is two sequences (chosen, rejected) in one forward
        key, units, weight = "micro_batches", cfg.batch_size, 2 if experiment in PAIRED else 1
    shards = layout.mesh.data * layout.mesh.fsdp
    if units % shards:
        raise ValueError(f"layout {layout_name!r}: a batch of {units} does not split over data*fsdp = {shards}")
    from rlhf_jax.models import preset as arch

    for model_key, src in models.items():
        heads = arch(src.preset)
        for name in ("num_heads", "num_kv_heads"):
            if getattr(heads, name) % layout.mesh.tensor:
                raise ValueError(f"layout {layout_name!r}: {model_key}.preset={src.preset!r} has {name}="
                                 f"{getattr(heads, name)}, not divisible by tensor={layout.mesh.tensor}")
    per_shard = units // shards
    micro = next(m for m in range(1, per_shard + 1)
                 if per_shard % m == 0 and per_shard // m * weight <= max(layout.rows_per_device, weight))
    return out + [(key, str(micro))]


def preset_flags(name: str) -> list[tuple[str, str]]:
    """The overrides of preset `name` (without a layout) as (key, text) pairs."""
    return [(k, to_text(v)) for k, v in PRESETS[name].overrides.items()]


def with_preset(experiment: str, name: str, default_cfg: Any) -> tuple[Any, list[tuple[str, str]]]:
    """`default_cfg` with paper preset `name` ('PRESET' or 'PRESET@LAYOUT') applied, and the flags
    that did it. Raises KeyError if `name` is not a preset of `experiment`."""
    from rlhf_jax.config import ConfigError, apply_overrides

    preset_name, layout_name = split_name(name)
    known = presets_for(experiment)
    if preset_name not in known:
        raise KeyError(preset_name)
    flags = preset_flags(preset_name)
    try:
        cfg = apply_overrides(default_cfg, flags)
        layout = layout_name or known[preset_name].layout
        extra = layout_overrides(experiment, cfg, layout)
        return apply_overrides(cfg, extra), flags + extra
    except (ConfigError, ValueError) as e:
        raise ConfigError(f"preset {name!r}: {e}") from None
