"""rlhf_jax: a JAX/Flax research codebase for aligning language models with human preferences.

Data flows one way: tokens -> Flax LLaMA (`rlhf_jax.models`) -> per-token log-probs / values /
scores -> pure loss functions (`rlhf_jax.losses`) -> one jitted step per algorithm -> experiment
loop (`experiments/`).
"""

__version__ = "0.1.0"
