"""The in-memory examples every reader produces, and their flat stored form.

A prompt is a *conversation*: a tuple of `Turn`s that alternate user / assistant, start with a user
turn and end with one (the turn the model answers). Single-turn datasets (PKU-SafeRLHF, Alpaca) give
one user turn; HH-RLHF keeps multi-turn prompts whole. Prompt templates (`templates.py`) turn a
conversation into model text, so the same stored data serves every model family.

Stored form (TFDS features and the dicts the grain pipelines read), all strings UTF-8:
- preference: `prompt_roles`, `prompt_texts` (parallel lists), `chosen`, `rejected`, `meta` (JSON text)
- SFT:        `prompt_roles`, `prompt_texts`, `response`, `meta`
- prompt:     `prompt_roles`, `prompt_texts`, `meta`
`decode_*` accept the `bytes` a `tfds.data_source` returns as well as `str`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

USER = "user"
ASSISTANT = "assistant"
ROLES = (USER, ASSISTANT)


@dataclasses.dataclass(frozen=True)
class Turn:
    """One message of a conversation: `role` is "user" or "assistant"."""

    role: str
    text: str


Conversation = tuple[Turn, ...]


def check_conversation(conversation: Sequence[Turn], where: str) -> Conversation:
    """Returns `conversation` as a tuple after checking its shape; `where` prefixes the error.

    Raises ValueError unless the turns alternate user/assistant, starting and ending with a user turn.
    """
    turns = tuple(conversation)
    if not turns:
        raise ValueError(f"{where}: empty conversation")
    for i, turn in enumerate(turns):
        expected = USER if i % 2 == 0 else ASSISTANT
        if turn.role != expected:
            raise ValueError(
                f"{where}: turn {i} has role {turn.role!r}, expected {expected!r} "
                "(turns alternate user/assistant and start with the user)"
            )
        if not isinstance(turn.text, str):
            raise ValueError(f"{where}: turn {i} text is {type(turn.text).__name__}, not str")
    if turns[-1].role != USER:
        raise ValueError(f"{where}: the last turn must be the user's (the one to answer)")
    return turns


def user_prompt(text: str) -> Conversation:
    """A one-turn conversation holding `text` as the user message."""
    return (Turn(USER, text),)


@dataclasses.dataclass(frozen=True)
class PreferencePair:
    """A prompt with a preferred (`chosen`) and a dispreferred (`rejected`) response."""

    prompt: Conversation
    chosen: str
    rejected: str
    meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class SFTExample:
    """A prompt and the response to imitate."""

    prompt: Conversation
    response: str
    meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def _prompt_fields(prompt: Conversation) -> dict[str, Any]:
    return {"prompt_roles": [t.role for t in prompt], "prompt_texts": [t.text for t in prompt]}


def encode_pair(pair: PreferencePair) -> dict[str, Any]:
    """The stored form of a preference pair (see the module docstring)."""
    return {**_prompt_fields(pair.prompt), "chosen": pair.chosen, "rejected": pair.rejected,
            "meta": json.dumps(dict(pair.meta), sort_keys=True)}


def encode_sft(example: SFTExample) -> dict[str, Any]:
    """The stored form of an SFT example."""
    return {**_prompt_fields(example.prompt), "response": example.response,
            "meta": json.dumps(dict(example.meta), sort_keys=True)}


def encode_prompt(prompt: Conversation, meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The stored form of a prompt-only example."""
    return {**_prompt_fields(prompt), "meta": json.dumps(dict(meta or {}), sort_keys=True)}


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, str):
        return value
    # numpy string scalars / object arrays hold one of the two above
    return _text(value.item()) if hasattr(value, "item") else str(value)


def _field(record: Mapping[str, Any], key: str) -> Any:
    if key not in record:
        raise KeyError(f"stored example lacks key {key!r} (keys: {sorted(record)})")
    return record[key]


def decode_prompt(record: Mapping[str, Any]) -> Conversation:
    """The conversation of a stored example (any of the three kinds)."""
    roles = [_text(r) for r in _field(record, "prompt_roles")]
    texts = [_text(t) for t in _field(record, "prompt_texts")]
    if len(roles) != len(texts):
        raise ValueError(f"stored example has {len(roles)} prompt_roles but {len(texts)} prompt_texts")
    return check_conversation([Turn(r, t) for r, t in zip(roles, texts)], "stored example")


def decode_meta(record: Mapping[str, Any]) -> dict[str, Any]:
    """The `meta` dict of a stored example ({} when it has none)."""
    return json.loads(_text(record["meta"])) if "meta" in record else {}


def decode_pair(record: Mapping[str, Any]) -> PreferencePair:
    """Inverse of `encode_pair`; accepts bytes or str values."""
    return PreferencePair(decode_prompt(record), _text(_field(record, "chosen")),
                          _text(_field(record, "rejected")), decode_meta(record))


def decode_sft(record: Mapping[str, Any]) -> SFTExample:
    """Inverse of `encode_sft`; accepts bytes or str values."""
    return SFTExample(decode_prompt(record), _text(_field(record, "response")), decode_meta(record))
