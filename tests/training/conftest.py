"""Session fixtures for the training tests: toy data in the real formats and a tokenizer for it."""

import json
import random

import pytest

from rlhf_jax.data.tiny_tokenizer import train_tiny_tokenizer

COLORS = ["red", "blue", "green", "black", "white", "pink", "gold", "gray"]
ANIMALS = ["cat", "dog", "fox", "owl", "cow", "bee", "elk", "ant"]


def toy_examples(n: int, seed: int):
    """(instruction, good answer, bad answer): the good answer names the animal of the prompt."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        color, animal = rng.choice(COLORS), rng.choice(ANIMALS)
        other = rng.choice([a for a in ANIMALS if a != animal])
        rows.append((f"Name the {color} {animal}.", f"The {animal} is {color}.", f"The {other} is {color}."))
    return rows


@pytest.fixture(scope="session")
def toy_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    train, test = toy_examples(48, seed=0), toy_examples(16, seed=1)
    (root / "alpaca.json").write_text(json.dumps(
        [{"instruction": q, "input": "", "output": good} for q, good, _ in train]))
    for name, rows in (("prefs_train.jsonl", train), ("prefs_test.jsonl", test)):
        (root / name).write_text("".join(
            json.dumps({"prompt": q, "chosen": good, "rejected": bad}) + "\n" for q, good, bad in rows))
    texts = [f"{q} {good} {bad}" for q, good, bad in train + test] + ["USER: ASSISTANT: BEGINNING OF CONVERSATION:"]
    train_tiny_tokenizer(texts, root / "tokenizer", vocab_size=320)
    return root
