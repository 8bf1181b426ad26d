"""Alpaca-format SFT data (instruction / input / output), for the SFT(Alpaca)-style starting model.

Source layouts: Stanford's `alpaca_data.json` (one JSON array), `yahma/alpaca-cleaned`'s
`alpaca_data_cleaned.json`, or `tatsu-lab/alpaca`'s `data/train-00000-of-00001-*.parquet`; JSON Lines
with the same fields also works. Every row needs `instruction` (non-empty string), `input` (string,
often empty) and `output` (string).

The user turn is the instruction, followed by a blank line and the input when the input is not empty
(safe-rlhf's Alpaca loader joins the two the same way, with a space); the output is the response.
"""

from __future__ import annotations

import os

from rlhf_jax.data.records import iter_records
from rlhf_jax.data.schema import SFTExample, user_prompt

SOURCE = "alpaca"
SPLIT_PATTERNS = ("alpaca_data.json", "alpaca_data_cleaned.json", "data/{split}-*.parquet",
                  "{split}.json", "{split}.jsonl")


def alpaca_user_text(instruction: str, input_text: str) -> str:
    """The user message for an Alpaca row: the instruction, plus "\\n\\n" + input when input is set."""
    return f"{instruction}\n\n{input_text}" if input_text.strip() else instruction


def read_alpaca(path: str | os.PathLike) -> list[SFTExample]:
    """All rows of an Alpaca-format file as SFT examples; bad rows raise DataFormatError (file:line)."""
    examples = []
    for rec in iter_records(path):
        instruction = rec.str_field("instruction", allow_empty=False)
        input_text = rec.str_field("input")
        output = rec.str_field("output")
        examples.append(SFTExample(user_prompt(alpaca_user_text(instruction, input_text)), output,
                                   {"source": SOURCE, "where": rec.where}))
    return examples
