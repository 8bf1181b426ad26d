"""Flax NNX LLaMA family, its sharded creation, and Hugging Face checkpoint interop."""

from rlhf_jax.models.config import PRESETS, LlamaConfig, RopeScaling, preset
from rlhf_jax.models.create import abstract_model, create_model, model_shardings
from rlhf_jax.models.llama import (
    KVCache, LlamaForCausalLM, LlamaForScore, LlamaModel, ScoreOutput, default_positions,
    last_valid_index)

__all__ = [
    "PRESETS", "LlamaConfig", "RopeScaling", "preset", "abstract_model", "create_model",
    "model_shardings", "KVCache", "LlamaForCausalLM", "LlamaForScore", "LlamaModel", "ScoreOutput",
    "default_positions", "last_valid_index",
]
