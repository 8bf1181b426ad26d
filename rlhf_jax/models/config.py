"""LLaMA-family architecture config: LLaMA-1/2/3.x, CodeLlama, Mistral-style, and presets.

`LlamaConfig` is a frozen dataclass: hashable, so it can live in a module's static graph and be a
`jit` static argument. `from_hf_dict` reads a Hugging Face `config.json` (both the transformers-4
layout with `rope_theta` / `rope_scaling` and the transformers-5 layout with `rope_parameters`);
`to_hf_dict` writes the fields transformers needs to rebuild the same model.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

RematPolicy = Literal["none", "full", "dots", "dots_no_batch"]
Attention = Literal["xla", "cudnn", "splash"]
DType = Literal["float32", "bfloat16", "float16"]

HF_CAUSAL_ARCHS = ("LlamaForCausalLM", "MistralForCausalLM")
HF_SCORE_ARCHS = ("LlamaForSequenceClassification", "MistralForSequenceClassification")


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """RoPE frequency scaling. `kind="llama3"` is Llama 3.1's rule; `"linear"` divides positions."""

    kind: Literal["linear", "llama3"] = "llama3"
    factor: float = 8.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    """Architecture of a LLaMA-family decoder. Sizes follow Hugging Face names where they exist."""

    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_layers: int = 32
    num_heads: int = 32
    num_kv_heads: int = 32
    head_dim: int | None = None  # None -> hidden_size // num_heads
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 4096
    sliding_window: int | None = None  # Mistral v0.1; None = full causal attention
    initializer_range: float = 0.02
    bos_token_id: int | None = 1
    eos_token_id: int | None = 2
    pad_token_id: int | None = None
    model_type: Literal["llama", "mistral"] = "llama"
    # Numerics and memory (not architecture): compute dtype, parameter dtype, rematerialization, and
    # the attention kernel of full-sequence forwards ("cudnn": cuDNN flash attention, GPU, bf16/fp16;
    # "splash": the Pallas splash kernel, TPU, sequence lengths a multiple of 128; decoding with a KV
    # cache always uses XLA's).
    dtype: DType = "float32"
    param_dtype: DType = "float32"
    remat: RematPolicy = "none"
    attention: Attention = "xla"

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                     "num_kv_heads"):
            if getattr(self, name) <= 0:
                raise ValueError(f"LlamaConfig.{name} must be positive, got {getattr(self, name)}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"LlamaConfig.num_heads={self.num_heads} must be a multiple of "
                f"num_kv_heads={self.num_kv_heads} (grouped-query attention)")
        if self.head_dim is None and self.hidden_size % self.num_heads:
            raise ValueError(
                f"LlamaConfig.hidden_size={self.hidden_size} is not divisible by "
                f"num_heads={self.num_heads}; set head_dim explicitly")
        if self.attention not in ("xla", "cudnn", "splash"):
            raise ValueError(f"LlamaConfig.attention={self.attention!r}; choose 'xla', 'cudnn' or 'splash'")
        if self.attention == "cudnn" and self.dtype not in ("bfloat16", "float16"):
            raise ValueError(f"LlamaConfig.attention='cudnn' needs dtype bfloat16 or float16 (cuDNN flash "
                             f"attention), got dtype={self.dtype!r}")
        if self.resolved_head_dim % 2:
            raise ValueError(f"LlamaConfig.head_dim must be even for RoPE, got {self.resolved_head_dim}")

    @property
    def resolved_head_dim(self) -> int:
        return self.head_dim if self.head_dim is not None else self.hidden_size // self.num_heads

    def replace(self, **kwargs) -> "LlamaConfig":
        return dataclasses.replace(self, **kwargs)

    def num_params(self, *, with_lm_head: bool = True) -> int:
        """Parameter count (embeddings included; lm_head counted once when tied)."""
        d, f, hd = self.hidden_size, self.intermediate_size, self.resolved_head_dim
        attn = d * hd * (2 * self.num_heads + 2 * self.num_kv_heads)
        layer = attn + 3 * d * f + 2 * d
        head = 0 if (self.tie_word_embeddings or not with_lm_head) else d * self.vocab_size
        return self.vocab_size * d + self.num_layers * layer + d + head

    # ---------------------------------------------------------------- Hugging Face interop
    @classmethod
    def from_hf_dict(cls, hf: dict[str, Any], *, source: str = "config.json", **overrides) -> "LlamaConfig":
        """Builds a config from a Hugging Face config dict; unsupported features raise naming the key."""
        model_type = hf.get("model_type")
        if model_type not in ("llama", "mistral"):
            raise ValueError(
                f"{source}: model_type={model_type!r} is not a LLaMA-family architecture "
                "(supported: 'llama', 'mistral')")
        archs = hf.get("architectures") or []
        known = HF_CAUSAL_ARCHS + HF_SCORE_ARCHS
        for arch in archs:
            if arch not in known:
                raise ValueError(f"{source}: architectures contains {arch!r}; supported: {list(known)}")
        if hf.get("hidden_act", "silu") != "silu":
            raise ValueError(f"{source}: hidden_act={hf['hidden_act']!r} unsupported (only 'silu')")
        for key in ("attention_bias", "mlp_bias"):
            if hf.get(key):
                raise ValueError(f"{source}: {key}=true is not supported by rlhf_jax's LLaMA")
        if hf.get("pretraining_tp", 1) not in (1, None):
            raise ValueError(f"{source}: pretraining_tp={hf['pretraining_tp']} unsupported (use 1)")
        rope = dict(hf.get("rope_parameters") or {})
        theta = hf.get("rope_theta", rope.get("rope_theta", 10000.0))
        scaling_dict = hf.get("rope_scaling") or (rope if rope.get("rope_type", "default") != "default" else None)
        scaling = None
        if scaling_dict:
            kind = scaling_dict.get("rope_type", scaling_dict.get("type"))
            if kind == "llama3":
                scaling = RopeScaling(
                    kind="llama3", factor=float(scaling_dict["factor"]),
                    low_freq_factor=float(scaling_dict["low_freq_factor"]),
                    high_freq_factor=float(scaling_dict["high_freq_factor"]),
                    original_max_position_embeddings=int(scaling_dict["original_max_position_embeddings"]))
            elif kind == "linear":
                scaling = RopeScaling(kind="linear", factor=float(scaling_dict["factor"]))
            elif kind not in (None, "default"):
                raise ValueError(f"{source}: rope scaling type {kind!r} unsupported ('llama3', 'linear')")
        eos = hf.get("eos_token_id")
        if isinstance(eos, list):  # Llama 3 lists several; the first is the end-of-text token
            eos = eos[0] if eos else None
        try:
            cfg = cls(
                vocab_size=int(hf["vocab_size"]),
                hidden_size=int(hf["hidden_size"]),
                intermediate_size=int(hf["intermediate_size"]),
                num_layers=int(hf["num_hidden_layers"]),
                num_heads=int(hf["num_attention_heads"]),
                num_kv_heads=int(hf.get("num_key_value_heads") or hf["num_attention_heads"]),
                head_dim=hf.get("head_dim"),
                rope_theta=float(theta),
                rope_scaling=scaling,
                rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
                tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
                max_position_embeddings=int(hf.get("max_position_embeddings", 4096)),
                sliding_window=hf.get("sliding_window") if model_type == "mistral" else None,
                initializer_range=float(hf.get("initializer_range", 0.02)),
                bos_token_id=hf.get("bos_token_id"),
                eos_token_id=eos,
                pad_token_id=hf.get("pad_token_id"),
                model_type=model_type,
                **overrides,
            )
        except KeyError as e:
            raise ValueError(f"{source}: missing required key {e.args[0]!r}") from None
        return cfg

    def to_hf_dict(self) -> dict[str, Any]:
        """The keys transformers' LlamaConfig / MistralConfig take (kwargs for their constructors)."""
        out: dict[str, Any] = dict(
            vocab_size=self.vocab_size, hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size, num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads, num_key_value_heads=self.num_kv_heads,
            head_dim=self.resolved_head_dim, rms_norm_eps=self.rms_norm_eps,
            tie_word_embeddings=self.tie_word_embeddings,
            max_position_embeddings=self.max_position_embeddings,
            initializer_range=self.initializer_range, bos_token_id=self.bos_token_id,
            eos_token_id=self.eos_token_id, pad_token_id=self.pad_token_id, hidden_act="silu",
        )
        rope: dict[str, Any] = {"rope_theta": self.rope_theta, "rope_type": "default"}
        if self.rope_scaling is not None:
            s = self.rope_scaling
            rope.update(rope_type=s.kind, factor=s.factor)
            if s.kind == "llama3":
                rope.update(low_freq_factor=s.low_freq_factor, high_freq_factor=s.high_freq_factor,
                            original_max_position_embeddings=s.original_max_position_embeddings)
        out["rope_parameters"] = rope
        if self.model_type == "mistral":
            out["sliding_window"] = self.sliding_window
        return out


# Presets: architectures of public checkpoints (shapes only; weights come from load_pretrained).
PRESETS: dict[str, LlamaConfig] = {
    "tiny": LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_layers=2,
                        num_heads=4, num_kv_heads=2, max_position_embeddings=512),
    "tinyllama-1.1b": LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5632,
                                  num_layers=22, num_heads=32, num_kv_heads=4,
                                  max_position_embeddings=2048, dtype="bfloat16", param_dtype="bfloat16"),
    "llama2-7b": LlamaConfig(max_position_embeddings=4096, rms_norm_eps=1e-5),
    "codellama-7b": LlamaConfig(vocab_size=32016, rope_theta=1e6, max_position_embeddings=16384),
    "codellama-13b": LlamaConfig(vocab_size=32016, hidden_size=5120, intermediate_size=13824,
                                 num_layers=40, num_heads=40, num_kv_heads=40, rope_theta=1e6,
                                 max_position_embeddings=16384),
    "codellama-34b": LlamaConfig(vocab_size=32000, hidden_size=8192, intermediate_size=22016,
                                 num_layers=48, num_heads=64, num_kv_heads=8, rope_theta=1e6,
                                 max_position_embeddings=16384),
    "llama3.1-8b": LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                               num_layers=32, num_heads=32, num_kv_heads=8, rope_theta=500000.0,
                               rope_scaling=RopeScaling(), max_position_embeddings=131072,
                               bos_token_id=128000, eos_token_id=128001),
    "mistral-7b": LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=14336,
                              num_layers=32, num_heads=32, num_kv_heads=8, rope_theta=1e6,
                              max_position_embeddings=32768, model_type="mistral"),
}


def preset(name: str, **overrides) -> LlamaConfig:
    """A named architecture, with field overrides (e.g. `preset("tiny", num_layers=4)`)."""
    if name not in PRESETS:
        raise KeyError(f"unknown model preset {name!r}; known presets: {sorted(PRESETS)}")
    return PRESETS[name].replace(**overrides)
