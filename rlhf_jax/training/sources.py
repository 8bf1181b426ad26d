"""Where an experiment's model, tokenizer and examples come from, chosen by name in its config.

Data sources are registries (name -> reader), validated when the config loads:

    SFT_SOURCES["alpaca"](path)           -> list[SFTExample]   (SFT(Alpaca))
    SFT_SOURCES["safe_rlhf_safe"](path)   -> the safe responses of PKU-SafeRLHF (SFT(Safe))
    SFT_SOURCES["preference_chosen"](path)-> chosen responses of a generic preference JSONL file
    SFT_SOURCES["apps"](path)             -> APPS problems' reference solutions (code SFT)
    PAIR_SOURCES["safe_rlhf"](path)       -> the paper's merged PKU-SafeRLHF preference pairs
    PAIR_SOURCES["safe_rlhf_no_dual_unsafe"], ["safe_rlhf_no_dual"] -> the paper's two filters
    PAIR_SOURCES["hh_rlhf"](path)         -> HH-RLHF pairs (path = repository folder; split "train")
    PAIR_SOURCES["hh_rlhf_test"](path)    -> the same folder's "test" split (held-out evaluation)
    PAIR_SOURCES["preference_jsonl"](path)-> our generic preference JSONL format

Models come from a local Hugging Face folder, or are built at random from a preset (tests and the
miniature), with the vocabulary sized to the tokenizer.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Literal

from rlhf_jax.data import (
    PreferencePair, SFTExample, preference_pairs, read_alpaca, read_hh_rlhf, read_preference_jsonl,
    read_safe_rlhf, safe_responses)
from rlhf_jax.models import (
    LlamaForCausalLM, LlamaForScore, create_model, load_pretrained, load_tokenizer, preset)


def _safe_rlhf_pairs(**filters):
    def read(path: str) -> list[PreferencePair]:
        pairs, counts = preference_pairs(read_safe_rlhf(path), **filters)
        print(f"{path}: {counts}")
        return pairs
    return read


def _hh_split(path: str, split: str = "train") -> list[PreferencePair]:
    pairs, counts = read_hh_rlhf(path, split)
    print(f"{path} [{split}]: {counts}")
    return pairs


def _safe_sft(path: str) -> list[SFTExample]:
    examples, counts = safe_responses(read_safe_rlhf(path))
    print(f"{path}: {counts}")
    return examples


def _chosen_sft(path: str) -> list[SFTExample]:
    return [SFTExample(p.prompt, p.chosen, dict(p.meta)) for p in read_preference_jsonl(path)]


def _apps_sft(path: str) -> list[SFTExample]:
    """Code SFT: every reference solution of every APPS-format problem with tests, as the response
    to the problem's "apps"-style prompt (the prompt the PPO and iterative-DPO code runs use)."""
    from rlhf_jax.data.schema import user_prompt
    from rlhf_jax.rewards import format_prompt, format_response, read_apps, with_tests

    problems, dropped = with_tests(read_apps(path))
    examples = [SFTExample(user_prompt(format_prompt(p, "apps")), format_response(s, "apps"),
                           {"problem_id": str(p.problem_id)})
                for p in problems for s in p.solutions]
    print(f"{path}: {len(examples)} solutions of {len(problems)} problems with tests ({dropped} without)")
    return examples


SFT_SOURCES: dict[str, Callable[[str], list[SFTExample]]] = {
    "alpaca": read_alpaca,
    "apps": _apps_sft,
    "safe_rlhf_safe": _safe_sft,
    "preference_chosen": _chosen_sft,
}

PAIR_SOURCES: dict[str, Callable[[str], list[PreferencePair]]] = {
    "safe_rlhf": _safe_rlhf_pairs(),
    "safe_rlhf_no_dual_unsafe": _safe_rlhf_pairs(drop_dual_unsafe=True),
    "safe_rlhf_no_dual": _safe_rlhf_pairs(drop_dual_unsafe=True, drop_dual_safe=True),
    "hh_rlhf": _hh_split,
    "hh_rlhf_test": lambda path: _hh_split(path, "test"),
    "preference_jsonl": read_preference_jsonl,
}


def read_source(registry: dict[str, Callable], name: str, path: str, *, key: str):
    """Reads `path` with `registry[name]`; errors name the config key and the known names."""
    if name not in registry:
        raise ValueError(f"{key}={name!r} is not a known data format; choose from {sorted(registry)}")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{key}: data path {path!r} does not exist")
    return registry[name](path)


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """A local HF checkpoint folder, or (hf_path None) a random model of `preset` for tests."""

    hf_path: str | None = None
    preset: str = "tiny"
    dtype: Literal["float32", "bfloat16"] = "float32"
    param_dtype: Literal["float32", "bfloat16"] = "float32"
    remat: Literal["none", "full", "dots", "dots_no_batch"] = "none"
    attention: Literal["xla", "cudnn", "splash"] = "xla"  # fused: "cudnn" (GPU, bf16), "splash" (TPU)
    seed: int = 0


def check_attention(src: ModelSource, *, key: str = "model") -> None:
    """A fused attention kernel needs its backend (and cuDNN's a bf16 compute dtype): said before any
    weight is built or loaded, naming `key`."""
    import jax

    from rlhf_jax.models.layers import FUSED_ATTENTION

    if src.attention == "xla":
        return
    backend = FUSED_ATTENTION[src.attention][0]
    if jax.default_backend() != backend:
        raise ValueError(f"{key}.attention={src.attention!r} runs on a {backend} backend only, this is "
                         f"{jax.default_backend()!r}; set {key}.attention=xla")
    if src.attention == "cudnn" and src.dtype != "bfloat16":
        raise ValueError(f"{key}.attention='cudnn' needs {key}.dtype=bfloat16 (cuDNN flash attention), "
                         f"got {src.dtype!r}")


def build_model(src: ModelSource, *, mesh, head: Literal["lm", "score"] = "lm", vocab_size: int | None = None,
                key: str = "model"):
    """The model of `src` on `mesh`: loaded (head 'score' on an LM checkpoint adds a fresh head) or random."""
    check_attention(src, key=key)
    if src.hf_path is not None:
        if not os.path.isdir(src.hf_path):
            raise FileNotFoundError(f"{key}.hf_path={src.hf_path!r} is not a folder")
        return load_pretrained(src.hf_path, mesh=mesh, dtype=src.dtype, param_dtype=src.param_dtype,
                               head=head, remat=src.remat, attention=src.attention)
    overrides = dict(dtype=src.dtype, param_dtype=src.param_dtype, remat=src.remat, attention=src.attention)
    if vocab_size is not None:
        overrides["vocab_size"] = vocab_size
    cfg = preset(src.preset, **overrides)
    cls = LlamaForScore if head == "score" else LlamaForCausalLM
    return create_model(cls, cfg, mesh=mesh, seed=src.seed)


def build_tokenizer(path: str, *, key: str = "tokenizer_path"):
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{key}={path!r} is not a tokenizer folder")
    return load_tokenizer(path)
