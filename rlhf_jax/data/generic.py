"""Our own preference format for users' data: JSON Lines, one pair a line.

Each line is a JSON object with
    "prompt":   a string (one user message), or a list of chat messages
                [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}, ...]
                alternating user/assistant, starting and ending with the user;
    "chosen":   string, the preferred response to the last user message;
    "rejected": string, the dispreferred response;
    "meta":     optional JSON object, carried along untouched (e.g. {"source": "my-labels-v2"}).
Example:
    {"prompt": "How do I boil an egg?", "chosen": "Put it in boiling water ...", "rejected": "No."}
Files may be plain, `.gz` or `.xz` compressed. Unknown top-level keys are an error (they are usually a
misspelt field). `write_preference_jsonl` writes the same format, so the two round-trip.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable

from rlhf_jax.data.records import Record, iter_records
from rlhf_jax.data.schema import ROLES, USER, Conversation, PreferencePair, Turn, check_conversation

SOURCE = "preference_jsonl"
KEYS = ("prompt", "chosen", "rejected", "meta")
SPLIT_PATTERNS = ("{split}.jsonl", "{split}.jsonl.gz", "{split}.jsonl.xz")


def _prompt(rec: Record) -> Conversation:
    value = rec.data.get("prompt")
    if isinstance(value, str):
        return (Turn(USER, rec.str_field("prompt", allow_empty=False)),)
    if not isinstance(value, list):
        raise rec.error("prompt", f"expected a string or a list of messages, got {value!r:.80}")
    turns = []
    for i, message in enumerate(value):
        if (not isinstance(message, dict) or set(message) != {"role", "content"}
                or message["role"] not in ROLES or not isinstance(message["content"], str)):
            raise rec.error(f"prompt[{i}]", 'expected {"role": "user"|"assistant", "content": str}, '
                            f"got {message!r:.80}")
        turns.append(Turn(message["role"], message["content"]))
    try:
        return check_conversation(turns, "prompt")
    except ValueError as e:
        raise rec.error("prompt", str(e)) from e


def pair_from_record(rec: Record) -> PreferencePair:
    """One line of the format as a PreferencePair; raises DataFormatError naming file, line, field."""
    extra = sorted(set(rec.data) - set(KEYS))
    if extra:
        raise rec.error(None, f"unknown keys {extra}; allowed: {list(KEYS)}")
    meta = rec.data.get("meta", {})
    if not isinstance(meta, dict):
        raise rec.error("meta", f"expected a JSON object, got {meta!r:.80}")
    return PreferencePair(_prompt(rec), rec.str_field("chosen"), rec.str_field("rejected"),
                          {**meta, "where": rec.where})


def read_preference_jsonl(path: str | os.PathLike) -> list[PreferencePair]:
    """All pairs of a file in this format (`meta` gains a "where": "path:line" entry)."""
    return [pair_from_record(rec) for rec in iter_records(path)]


def write_preference_jsonl(path: str | os.PathLike, pairs: Iterable[PreferencePair]) -> int:
    """Writes `pairs` in this format (a one-turn prompt as a plain string); returns the count.

    A "where" entry in `meta` (added by the reader) is not written back.
    """
    count = 0
    with open(path, "w", encoding="utf-8") as f:
        for pair in pairs:
            prompt = pair.prompt
            value = (prompt[0].text if len(prompt) == 1 else
                     [{"role": t.role, "content": t.text} for t in prompt])
            row = {"prompt": value, "chosen": pair.chosen, "rejected": pair.rejected}
            meta = {k: v for k, v in pair.meta.items() if k != "where"}
            if meta:
                row["meta"] = meta
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count
