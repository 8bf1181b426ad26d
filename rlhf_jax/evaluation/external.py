"""External judges of other architectures, scored through transformers' PyTorch classes.

The paper's HH-RLHF judge, OpenAssistant/oasst-rm-2-pythia-6.9b-epoch-1, is a GPT-NeoX
classifier; rather than port every architecture to Flax, such judges run in PyTorch on the host:

    judge = ExternalRewardModel.from_pretrained("/models/oasst-rm-2-pythia-6.9b-epoch-1")
    prompts = [get_template("oasst_pythia").render_prompt(c) for c in conversations]
    scores = judge.score_texts(prompts, responses, batch_size=8)

Needs the optional `eval` extra (torch); torch is imported only when a judge is loaded. The score of a
text is the head's output at its last real token, found from the attention mask, so it does not
depend on the checkpoint's `pad_token_id` (HF's own pooling looks for pad tokens and would skip a
final EOS that shares the pad id). Supported: `*ForSequenceClassification` models whose head is a
`score` linear layer on the base model's last hidden state (GPT-NeoX, LLaMA, Mistral, GPT-2, ...).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from rlhf_jax.evaluation.judge_inputs import encode_texts, judge_batches, pad_id_of


def _torch():
    try:
        import torch
    except ImportError as e:  # pragma: no cover - depends on the installed extras
        raise ImportError("external judges need PyTorch: pip install 'rlhf_jax[eval]'") from e
    return torch


class ExternalRewardModel:
    """A transformers sequence-classification model (one label) and its tokenizer, on one device."""

    def __init__(self, model, tokenizer, *, device: str = "cpu"):
        if getattr(model.config, "num_labels", None) != 1:
            raise ValueError(f"judge must have num_labels=1, got {getattr(model.config, 'num_labels', None)}")
        if not hasattr(model, "score") or not hasattr(model, "base_model"):
            raise ValueError(f"{type(model).__name__} has no `score` head on a `base_model`; unsupported")
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.device = device

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, device: str = "cpu", dtype: str = "float32"):
        """Loads model and tokenizer from a local folder (no downloads)."""
        torch = _torch()
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        path = os.fspath(path)
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise FileNotFoundError(f"{path}: no config.json (expected a local HF checkpoint folder)")
        model = AutoModelForSequenceClassification.from_pretrained(
            path, dtype=getattr(torch, dtype), local_files_only=True)
        return cls(model, AutoTokenizer.from_pretrained(path, local_files_only=True), device=device)

    def score_texts(self, prompts: Sequence[str], responses: Sequence[str], *, batch_size: int,
                    max_length: int | None = None, append_eos: bool = True) -> np.ndarray:
        """Score of each `prompt + response (+ eos)`, float32 [len(prompts)] (see `judge_inputs`)."""
        torch = _torch()
        encoded = encode_texts(self.tokenizer, prompts, responses, append_eos=append_eos,
                               max_length=max_length)
        out = np.full(len(encoded), np.nan, np.float32)
        for batch in judge_batches(encoded, batch_size, pad_id_of(self.tokenizer)):
            ids = torch.as_tensor(batch.input_ids, dtype=torch.long, device=self.device)
            mask = torch.as_tensor(batch.attention_mask, dtype=torch.long, device=self.device)
            with torch.no_grad():
                hidden = self.model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
                values = self.model.score(hidden)[..., 0].float()
            last = torch.as_tensor(batch.attention_mask.sum(axis=1) - 1, device=self.device)
            scores = values[torch.arange(len(last), device=self.device), last].cpu().numpy()
            real = batch.indices >= 0
            out[batch.indices[real]] = scores[real]
        return out
