"""Tiny random Hugging Face LLaMA checkpoints made by transformers itself (no downloads)."""

from __future__ import annotations

import torch
import transformers

BASE = dict(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
            rms_norm_eps=1e-6, pad_token_id=0, bos_token_id=1, eos_token_id=2)

CONFIGS = {
    "mha": dict(BASE),
    "gqa": dict(BASE, num_key_value_heads=2, rope_parameters={"rope_theta": 500.0, "rope_type": "default"}),
    "llama3_rope": dict(BASE, num_key_value_heads=1, rope_parameters={
        "rope_theta": 500000.0, "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 16}),
    "tied": dict(BASE, tie_word_embeddings=True),
    "odd": dict(BASE, vocab_size=61, hidden_size=36, intermediate_size=50, num_attention_heads=3,
                num_key_value_heads=3, head_dim=10, num_hidden_layers=3),
}


def make_hf_model(name: str, path: str, *, seed: int = 0, score: bool = False, mistral_window=None):
    """Saves a random HF model with config CONFIGS[name] to `path`; returns the torch model."""
    torch.manual_seed(seed)
    kwargs = dict(CONFIGS[name])
    if mistral_window is not None:
        cfg = transformers.MistralConfig(**kwargs, sliding_window=mistral_window)
        model = transformers.MistralForCausalLM(cfg)
    elif score:
        cfg = transformers.LlamaConfig(**kwargs, num_labels=1)
        model = transformers.LlamaForSequenceClassification(cfg)
    else:
        cfg = transformers.LlamaConfig(**kwargs)
        model = transformers.LlamaForCausalLM(cfg)
    with torch.no_grad():  # make norms non-trivial so a swapped norm weight is caught
        for n, p in model.named_parameters():
            if "norm" in n:
                p.uniform_(0.5, 1.5)
    model = model.float().eval()
    model.config._attn_implementation = "eager"
    model.save_pretrained(path)
    return model
