"""The dialogue half of the miniature paper: Table 2 (SafeRLHF) and Table 4 (dialogue reward).

On the bundled PKU-SafeRLHF-format task (`safety_task`), from one random tiny LLaMA:
  SFT(Alpaca)           SFT on the Alpaca-format set (answers almost everything)
  SFT(Safe)             SFT(Alpaca) further fine-tuned on the safe responses of the preference data
  reward model          from SFT(Alpaca), Bradley-Terry on the merged preference pairs (the judge PPO
                        and DPO-Iter train against; the gold evaluators are never used in training)
  DPO                   from SFT(Alpaca) on the merged pairs (responses from the behaviour policy:
                        the distribution shift of Section 5)
  + SFT(Safe)           DPO from SFT(Safe)
  + filter dual-unsafe  ... without the pairs where both responses are unsafe
  + filter dual-safe    ... and without those where both are safe (the filters are cumulative)
  DPO-Iter rounds 1-4   from SFT(Alpaca): sample k answers per prompt, label them with the reward
                        model, best vs worst, DPO with the reference reset each round
  PPO                   from SFT(Alpaca) with the reward model's score (critic from the reward model)
  RRHF, PRO             from SFT(Alpaca) on the same pairs (Table 4's listwise baselines)
Each model answers every distinct test prompt greedily; the gold evaluators give Help, Harm, the
safety rate and the gold reward (`evaluate.score_safety`).
"""

from __future__ import annotations

import dataclasses

from rlhf_jax.miniature import stages
from rlhf_jax.miniature.evaluate import evaluate_safety

DPO_ROWS = (("DPO", "SFT(Alpaca)", "safe_rlhf"), ("DPO + SFT(Safe)", "SFT(Safe)", "safe_rlhf"),
            ("+ filter dual-unsafe", "SFT(Safe)", "safe_rlhf_no_dual_unsafe"),
            ("+ filter dual-safe", "SFT(Safe)", "safe_rlhf_no_dual"))


@dataclasses.dataclass(frozen=True)
class SafetyScale:
    model: stages.ModelShape = stages.ModelShape()
    max_prompt_length: int = 24  # the longest rendered prompt is 21 tokens
    max_new_tokens: int = 32  # the longest response is 25 tokens
    sft_steps: int = 200
    sft_safe_steps: int = 60
    sft_batch: int = 16
    sft_lr: float = 3e-3
    rm_steps: int = 150
    rm_batch: int = 16
    rm_lr: float = 1e-3
    dpo_steps: int = 100
    dpo_batch: int = 16
    dpo_lr: float = 1e-4
    dpo_beta: float = 0.1
    iter_rounds: int = 4
    iter_prompts_per_round: int = 64
    iter_samples: int = 4
    iter_steps_per_round: int = 20
    ppo_iterations: int = 30
    ppo_batch: int = 32
    ppo_mini_batches: int = 2
    ppo_lr: float = 2e-4
    ppo_critic_lr: float = 5e-4
    ppo_kl: float = 0.1
    ppo_ema_eta: float = 0.05
    ranking: bool = True  # RRHF and PRO (Table 4)
    ranking_steps: int = 100
    ranking_lr: float = 2e-4

    def __post_init__(self):
        stages.check_sizes(self, "safety")


def run_safety(st: stages.Stages, bundle: dict, scale: SafetyScale, *, seed: int, progress: bool = True) -> dict:
    """Runs the dialogue pipeline under `st`; returns {"models", "eval": {row: gold metrics},
    "reward_model": held-out accuracy, "rounds": [per-round sample statistics]}."""
    from rlhf_jax.data import read_safe_rlhf
    from rlhf_jax.training.loop import read_metrics

    tok, paths = bundle["tokenizer"], bundle["safety"]["paths"]
    P, N = scale.max_prompt_length, scale.max_new_tokens
    common = dict(tokenizer=tok, max_prompt_length=P, seed=seed, progress=progress)
    init = stages.init_model(st.dir("safety_init"), tok, scale.model, seed=seed)
    models = {"SFT(Alpaca)": st.model_stage("safety_sft", stages.sft,
        init=init, data_format="alpaca", data_path=paths["sft"], steps=scale.sft_steps,
        batch_size=scale.sft_batch, lr=scale.sft_lr, max_length=P + N, **common)}
    sft = models["SFT(Alpaca)"]
    models["SFT(Safe)"] = st.model_stage("safety_sft_safe", stages.sft,
        init=sft, data_format="safe_rlhf_safe", data_path=paths["train"], steps=scale.sft_safe_steps,
        batch_size=scale.sft_batch, lr=scale.sft_lr / 3, max_length=P + N, **common)
    rm = st.model_stage("safety_reward_model", stages.reward_model,
        init=sft, data_format="safe_rlhf", data_path=paths["train"], eval_path=paths["test"], kind="reward",
        steps=scale.rm_steps, batch_size=scale.rm_batch, lr=scale.rm_lr, max_length=P + N, **common)
    for name, start, data in DPO_ROWS:
        workdir = "safety_" + "".join(c for c in name if c.isalnum()).lower()
        models[name] = st.model_stage(workdir, stages.dpo,
            init=models[start], data_format=data, data_path=paths["train"], steps=scale.dpo_steps,
            batch_size=scale.dpo_batch, lr=scale.dpo_lr, beta=scale.dpo_beta, max_length=P + N, **common)
    last = st.model_stage("safety_dpo_iter", stages.iterative_dpo,
        init=sft, prompt_format="safe_rlhf", prompt_path=paths["train"],
        labeler={"name": "reward_model", "model": stages.model(rm), "batch_size": 32,
                 "max_length": P + N, "max_prompt_length": P},
        pair_rule="best_vs_worst", rounds=scale.iter_rounds, steps_per_round=scale.iter_steps_per_round,
        prompts_per_round=scale.iter_prompts_per_round, samples_per_prompt=scale.iter_samples,
        max_new_tokens=N, batch_size=scale.dpo_batch, lr=scale.dpo_lr, beta=scale.dpo_beta, max_length=P + N,
        **common)
    for r in range(1, scale.iter_rounds + 1):
        models[f"DPO-Iter round {r}"] = last.replace("hf_model", f"rounds/{r}/hf_model") if r < scale.iter_rounds \
            else last
    models["PPO"] = st.model_stage("safety_ppo", stages.ppo,
        init=sft, prompt_format="safe_rlhf", prompt_path=paths["train"],
        reward={"source": "model", "model": stages.model(rm)}, iterations=scale.ppo_iterations,
        small_batch=scale.ppo_batch, large_batch=scale.ppo_batch, mini_batches=scale.ppo_mini_batches,
        advantage_norm=True, large=True, ema=True, ema_eta=scale.ppo_ema_eta, kl_coef=scale.ppo_kl,
        lr=scale.ppo_lr, critic_lr=scale.ppo_critic_lr, max_new_tokens=N, **common)
    if scale.ranking:
        for algorithm in ("rrhf", "pro"):
            models[algorithm.upper()] = st.model_stage(f"safety_{algorithm}", stages.ranking,
                algorithm=algorithm, init=sft, data_format="safe_rlhf", data_path=paths["train"],
                steps=scale.ranking_steps, batch_size=scale.dpo_batch, lr=scale.ranking_lr, max_length=P + N,
                **common)
    prompts = sorted({row.prompt for row in read_safe_rlhf(paths["test"])})
    results = {}
    for label, path in models.items():
        key = "".join(c for c in label if c.isalnum()).lower()
        results[label] = st.value_stage(f"eval_safety_{key}", lambda path=path: evaluate_safety(
            path, prompts, max_new_tokens=N, max_prompt_length=P, batch_size=32),
            key={"model": path, "prompts": prompts, "max_new_tokens": N, "max_prompt_length": P})
        m = results[label]
        st.log(f"[eval {label}] help {m['help']:.2f} harm {m['harm']:.2f} safety {m['safety_rate']:.1%} "
               f"reward {m['reward']:.2f}")
    rounds = [{"round": int(r["round/round"]), "mean_rm_score": r["round/mean_score"]}
              for r in read_metrics(st.dir("safety_dpo_iter")) if "round/mean_score" in r]
    return {"models": models, "eval": results, "reward_model": st.final_eval("safety_reward_model"),
            "rounds": rounds, "prompts": len(prompts)}
