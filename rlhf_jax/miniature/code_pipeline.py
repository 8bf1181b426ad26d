"""The code half of the miniature paper: SFT, then PPO with the unit-test reward vs iterative DPO.

On the bundled APPS-format task (`code_task`), from one random tiny LLaMA:
  SFT            on the reference solutions of the training problems (`SFT_SOURCES["apps"]`)
  PPO            from SFT; reward 10 if the sampled program passes every test of its training
                 problem, else 0 (the paper's reward), run in the real sandbox; the three tricks of
                 Table 3 are switches, so `ablation=True` adds the cumulative rows baseline (small
                 batch, no advantage normalization, frozen reference) -> + advantage normalization
                 -> + large batch -> + EMA reference (= the full PPO run)
  DPO-Iter       from SFT; each round samples k programs per training problem, labels them by the
                 tests and pairs them by the paper's APPS rule (a failing program loses to a passing
                 one, or to the dataset solution when none passes), then DPO with the reference
                 reset to the round's start
Every model is evaluated on the held-out test problems: greedy pass@1 and, with `eval_samples`,
pass@k at temperature 1, per difficulty (Tables 3, 7). Sizes are a `CodeScale`.
"""

from __future__ import annotations

import dataclasses
import os

from rlhf_jax.miniature import stages
from rlhf_jax.miniature.evaluate import evaluate_code

# Table 3's cumulative rows: (name, advantage_norm, large_batch, ema_reference)
ABLATION = (("PPO (baseline)", False, False, False), ("+ adv. norm", True, False, False),
            ("+ large batch", True, True, False), ("+ ref. EMA", True, True, True))


@dataclasses.dataclass(frozen=True)
class CodeScale:
    model: stages.ModelShape = stages.ModelShape()
    max_prompt_length: int = 120  # the longest rendered bundled prompt is 115 tokens (digits split)
    max_new_tokens: int = 88  # the longest reference solution is 82 tokens + EOS
    sft_steps: int = 300
    sft_batch: int = 16
    sft_lr: float = 3e-3
    ppo_iterations: int = 16
    ppo_small_batch: int = 16  # rollouts per iteration: the "small batch" of Table 3
    ppo_large_batch: int = 64  # and the large one (the paper: 64 vs 512)
    ppo_mini_batches: int = 2
    ppo_epochs: int = 2  # passes over each rollout batch: a tiny model gets more updates per sandbox run
    ppo_lr: float = 1e-4
    ppo_critic_lr: float = 1e-4
    ppo_kl: float = 0.1
    ppo_ema_eta: float = 0.05  # the paper's 0.001 per step assumes thousands of steps; ours are ~50
    dpo_rounds: int = 2
    dpo_prompts_per_round: int = 64
    dpo_samples: int = 4  # programs per problem per round (the paper: 5)
    dpo_steps_per_round: int = 20
    dpo_batch: int = 16
    dpo_lr: float = 1e-4
    dpo_beta: float = 0.1
    eval_problems: int = 90  # first n test problems; 0 = all
    eval_samples: int = 5  # programs per problem for pass@k, temperature 1 (0: greedy pass@1 only)
    eval_ks: tuple[int, ...] = (1, 5)

    def __post_init__(self):
        stages.check_sizes(self, "code", zero_ok=("eval_problems", "eval_samples"))
        if self.eval_samples and max(self.eval_ks) > self.eval_samples:
            raise ValueError(f"code.eval_ks={self.eval_ks} needs code.eval_samples >= {max(self.eval_ks)}, "
                             f"got {self.eval_samples}")


def run_code(st: stages.Stages, bundle: dict, scale: CodeScale, *, seed: int, ablation: bool = False,
             progress: bool = True) -> dict:
    """Runs the code pipeline under `st`; returns {"models": {row: hf path}, "eval": {row: metrics},
    "ppo_curves": {row: [(iteration, mean train reward)]}}."""
    from rlhf_jax.rewards import load_apps
    from rlhf_jax.rewards.reward import PASS_REWARD
    from rlhf_jax.training.loop import read_metrics

    tok, code_dir = bundle["tokenizer"], os.path.dirname(bundle["code"]["paths"]["train"])
    train = bundle["code"]["paths"]["train"]
    P, N = scale.max_prompt_length, scale.max_new_tokens
    init = stages.init_model(st.dir("code_init"), tok, scale.model, seed=seed)
    models = {"SFT": st.model_stage("code_sft", stages.sft,
        init=init, tokenizer=tok, data_format="apps", data_path=train, steps=scale.sft_steps,
        batch_size=scale.sft_batch, lr=scale.sft_lr, max_length=P + N, max_prompt_length=P, seed=seed,
        progress=progress)}
    sft = models["SFT"]
    rows = ABLATION if ablation else ABLATION[-1:]
    curves = {}
    for name, adv, large, ema in rows:
        label = "PPO" if name == "+ ref. EMA" else name
        workdir = "code_ppo" if label == "PPO" else "code_ppo_" + "".join(c for c in name if c.isalnum()).lower()
        models[label] = st.model_stage(workdir, stages.ppo,
            init=sft, tokenizer=tok, prompt_format="apps", prompt_path=train,
            reward={"source": "apps_unit_tests", "path": train}, iterations=scale.ppo_iterations,
            small_batch=scale.ppo_small_batch, large_batch=scale.ppo_large_batch,
            mini_batches=scale.ppo_mini_batches, advantage_norm=adv, large=large, ema=ema,
            ema_eta=scale.ppo_ema_eta, kl_coef=scale.ppo_kl, lr=scale.ppo_lr, critic_lr=scale.ppo_critic_lr,
            max_new_tokens=N, max_prompt_length=P, seed=seed, epochs=scale.ppo_epochs, progress=progress)
        curves[label] = [(r["step"], r["train/reward"]) for r in read_metrics(st.dir(workdir))
                         if "train/reward" in r]
    models["DPO-Iter"] = st.model_stage("code_dpo_iter", stages.iterative_dpo,
        init=sft, tokenizer=tok, prompt_format="apps", prompt_path=train, labeler={"name": "unit_tests"},
        pair_rule="apps_tests", rounds=scale.dpo_rounds, steps_per_round=scale.dpo_steps_per_round,
        prompts_per_round=scale.dpo_prompts_per_round, samples_per_prompt=scale.dpo_samples,
        max_new_tokens=N, batch_size=scale.dpo_batch, lr=scale.dpo_lr, beta=scale.dpo_beta,
        max_length=P + N, max_prompt_length=P, seed=seed, progress=progress)
    rounds = [r for r in read_metrics(st.dir("code_dpo_iter")) if "round/mean_score" in r]
    problems = load_apps(code_dir, "test")
    if scale.eval_problems:
        problems = problems[:scale.eval_problems]
    results = {}
    for label, path in models.items():
        settings = dict(samples=scale.eval_samples, ks=scale.eval_ks, max_new_tokens=N, max_prompt_length=P,
                        batch_size=32, seed=seed)
        results[label] = st.value_stage(f"eval_code_{label}", lambda path=path: evaluate_code(
            path, problems, **settings), key={"model": path, "problems": [p.problem_id for p in problems], **settings})
        st.log(f"[eval {label}] greedy pass@1 {results[label]['greedy']}")
    return {"models": models, "eval": results, "ppo_curves": curves,
            "dpo_rounds": [{"round": int(r["round/round"]), "sample_pass_rate": r["round/mean_score"] / PASS_REWARD}
                           for r in rounds]}
