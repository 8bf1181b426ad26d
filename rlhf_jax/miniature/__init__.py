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
- `tokenizer`: a byte-level BPE trained on all bundled text (HF format), and `build_bundle`, which
  generates both tasks and the tokenizer into one folder.
"""

__all__ = ["code_task", "safety_task", "tokenizer", "toy_ood", "toy_synthetic"]
