"""The paper in miniature: toy problems and bundled tasks small enough for a laptop CPU.

Modules (import the one you need; none is imported here, so the task generators do not load JAX):
- `toy_ood`: Xu et al. 2024 Table 1, the counter-example where DPO's optimum puts mass on a response
  the KL-regularized reward objective must leave at 0 (closed forms and the project's losses).
- `toy_synthetic`: Section 4.2, 8 prompts x 8 responses with MLP policies and reward model: where
  the reference, DPO, the reward model and PPO put out-of-distribution probability.
  Both are run, printed and plotted by `python -m experiments.toy_ood`.
- `safety_task`: a PKU-SafeRLHF-format dialogue task from a tiny grammar, with held-out gold
  helpfulness and cost evaluators, an Alpaca-format SFT set, and a behaviour policy for the
  preference responses that differs from the SFT distribution.
- `code_task`: an APPS-format code task from templates at three difficulties, scored by the sandbox.
- `tokenizer`: a byte-level BPE trained on all bundled text (HF format, digits split), and
  `build_bundle`, which generates both tasks and the tokenizer into one folder.
- `stages`: each stage of the miniature is an experiment module's `main` (sft, reward_model, dpo,
  iterative_dpo, ppo, ranking) with a tiny config; stages already done are skipped on a rerun.
- `code_pipeline`, `safety_pipeline`: the code half (SFT -> PPO with the unit-test reward, the Table 3
  ablation, iterative DPO) and the dialogue half (Table 2's rows, RRHF and PRO for Table 4).
- `evaluate`: pass@k in the sandbox; Help / Harm / Safety rate / reward from the gold evaluators.
- `paper`, `claims`, `report`: the paper's numbers, each claim as a check per seed, Markdown and plots.
Run by `python -m experiments.quickstart` (5 minutes) and `python -m experiments.miniature` (30).
"""

__all__ = ["claims", "code_pipeline", "code_task", "evaluate", "paper", "report", "safety_pipeline", "safety_task",
           "stages", "tokenizer", "toy_ood", "toy_synthetic"]
