"""A tiny byte-level BPE tokenizer trained on the spot, for tests and CPU-sized miniature runs.

It is a real Hugging Face tokenizer: trained with the `tokenizers` library, wrapped in
`transformers.PreTrainedTokenizerFast`, saved with `save_pretrained` and loaded back through
`AutoTokenizer`, so code exercised with it takes the same path as with a LLaMA or Pythia tokenizer.
Byte-level means every string encodes without unknown tokens.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}


def train_tiny_tokenizer(texts: Iterable[str], save_dir: str | os.PathLike, *, vocab_size: int = 384,
                         split_digits: bool = False):
    """Trains a byte-level BPE on `texts`, saves it to `save_dir`, returns it loaded by AutoTokenizer.

    The tokenizer has `<pad>`, `<s>` (BOS), `</s>` (EOS) and `<unk>` at ids 0-3 and adds no special
    tokens by itself (callers add BOS/EOS explicitly). `vocab_size` must exceed 256 + 4. With
    `split_digits`, every digit is its own token, as in LLaMA's tokenizer: a number is then spelled
    with ten frequent tokens instead of one rare token per number.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if vocab_size <= 256 + len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must exceed {256 + len(SPECIAL_TOKENS)}, got {vocab_size}")
    tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.pre_tokenizer = (pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
                         if split_digits else byte_level)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(texts), trainer)
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)
    wrapped.save_pretrained(os.fspath(save_dir))
    return AutoTokenizer.from_pretrained(os.fspath(save_dir))
