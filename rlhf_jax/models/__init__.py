"""Flax NNX LLaMA family, its sharded creation, and Hugging Face checkpoint interop."""

from rlhf_jax.models.config import PRESETS, LlamaConfig, RopeScaling, preset
from rlhf_jax.models.create import abstract_model, create_model, model_shardings
from rlhf_jax.models.llama import (
    KVCache, LlamaForCausalLM, LlamaForScore, LlamaModel, ScoreOutput, default_positions,
    last_valid_index)
from rlhf_jax.models.hf_io import check_vocab, load_pretrained, load_tokenizer, save_pretrained

__all__ = [
    "PRESETS", "LlamaConfig", "RopeScaling", "preset", "abstract_model", "create_model",
    "model_shardings", "KVCache", "LlamaForCausalLM", "LlamaForScore", "LlamaModel", "ScoreOutput",
    "default_positions", "last_valid_index", "check_vocab", "load_pretrained", "load_tokenizer",
    "save_pretrained",
]
