"""The miniature's tokenizer, trained on all bundled text, and the one call that builds the bundle.

`train_bundle_tokenizer(safety_dir, code_dir, save_dir)` reads the generated tasks back through the
project's own loaders (`read_safe_rlhf`, `read_alpaca`, `load_apps`), renders them the way the
models will see them (dialogue in the "safe_rlhf" template, code problems in the "apps" prompt
style, plus every reference solution) and trains a byte-level BPE on that text, digits split as in
LLaMA's tokenizer (a constant in a problem is copied digit by digit into the program), with
`rlhf_jax.data.tiny_tokenizer.train_tiny_tokenizer`. The result is a Hugging Face tokenizer folder
(`tokenizer.json`, `tokenizer_config.json`, ...), loaded with `AutoTokenizer.from_pretrained` like
any real checkpoint's.

`build_bundle(out_dir, seed)` generates everything into one folder:
    out_dir/safety/   train.jsonl, test.jsonl (PKU-SafeRLHF), sft_alpaca.jsonl, meta.json
    out_dir/code/     train.jsonl, test.jsonl (APPS)
    out_dir/tokenizer/
"""

from __future__ import annotations

import os

from rlhf_jax.data import get_template, read_alpaca, read_safe_rlhf
from rlhf_jax.data.schema import user_prompt
from rlhf_jax.data.tiny_tokenizer import train_tiny_tokenizer
from rlhf_jax.miniature import code_task, safety_task
from rlhf_jax.rewards import format_prompt, load_apps

DEFAULT_VOCAB_SIZE = 1024


def bundle_texts(safety_dir: str | os.PathLike, code_dir: str | os.PathLike) -> list[str]:
    """Every text of the bundle, as the models will read it: rendered prompts plus responses."""
    template = get_template("safe_rlhf")
    texts = []
    for split in ("train", "test"):
        path = os.path.join(safety_dir, f"{split}.jsonl")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"safety_dir={os.fspath(safety_dir)!r} has no {split}.jsonl; run "
                                    "rlhf_jax.miniature.safety_task.generate first")
        for row in read_safe_rlhf(path):
            prompt = template.render_prompt(user_prompt(row.prompt))
            texts += [prompt + template.render_response(r) for r in (row.response_0, row.response_1)]
    for ex in read_alpaca(os.path.join(safety_dir, "sft_alpaca.jsonl")):
        texts.append(template.render_prompt(ex.prompt) + template.render_response(ex.response))
    for split in ("train", "test"):
        for problem in load_apps(code_dir, split):
            texts.append(format_prompt(problem, "apps") + (problem.solutions[0] if problem.solutions else ""))
    return texts


def train_bundle_tokenizer(safety_dir: str | os.PathLike, code_dir: str | os.PathLike, save_dir: str | os.PathLike,
                           *, vocab_size: int = DEFAULT_VOCAB_SIZE):
    """Trains the byte-level BPE on `bundle_texts`, saves it in HF format to `save_dir`, returns it
    loaded by `AutoTokenizer` (special tokens <pad>, <s>, </s>, <unk> at ids 0-3)."""
    return train_tiny_tokenizer(bundle_texts(safety_dir, code_dir), save_dir, vocab_size=vocab_size, split_digits=True)


def build_bundle(out_dir: str | os.PathLike, seed: int = 0, *, safety_train: int = 2000, safety_test: int = 200,
                 code_train: int = 600, code_test: int = 150, vocab_size: int = DEFAULT_VOCAB_SIZE) -> dict:
    """Generates both tasks and trains the tokenizer under `out_dir` (layout in the module docstring).

    Returns {"safety": safety_task.generate(...), "code": code_task.generate(...), "tokenizer": path}.
    """
    out_dir = os.fspath(out_dir)
    safety = safety_task.generate(os.path.join(out_dir, "safety"), seed, safety_train, safety_test)
    code = code_task.generate(os.path.join(out_dir, "code"), seed, code_train, code_test)
    tok_dir = os.path.join(out_dir, "tokenizer")
    train_bundle_tokenizer(os.path.join(out_dir, "safety"), os.path.join(out_dir, "code"), tok_dir,
                           vocab_size=vocab_size)
    return {"safety": safety, "code": code, "tokenizer": tok_dir}
