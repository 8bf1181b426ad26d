"""Prompt templates: how a conversation becomes model text, per model family and dataset.

A template renders a conversation (alternating user/assistant turns, ending with the user) as

    begin + user(u1) + assistant + response_prefix + a1 + turn_end + user(u2) + assistant

and a response as `response_prefix + text`; the tokenizer's BOS/EOS tokens are added by the
tokenization step, not here. `turn_end` may contain "{eos}", replaced by the tokenizer's EOS string
(safe-rlhf closes each earlier answer with it). Templates are registered by name; a config names
one (`get_template("safe_rlhf")`) and an unknown name fails at once, listing the known ones.

Registered:
- "safe_rlhf": safe-rlhf's format ("BEGINNING OF CONVERSATION: USER: ... ASSISTANT:"), used by the
  Alpaca-7B SFT model and the official reward and cost models of the SafeRLHF experiments.
- "hh": Anthropic HH-RLHF's own transcript format ("\\n\\nHuman: ...\\n\\nAssistant:").
- "alpaca": the Stanford Alpaca instruction format.
- "llama2_chat": "[INST] ... [/INST]" (earlier turns joined by spaces; no system prompt).
- "oasst_pythia": the format of OpenAssistant's Pythia reward models, the paper's HH-RLHF judge.
`DATASET_TEMPLATES` gives the template each dataset's own models were trained with.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from rlhf_jax.data.schema import Turn, check_conversation


@dataclasses.dataclass(frozen=True)
class PromptTemplate:
    """Strings that turn a conversation into model text (see the module docstring)."""

    name: str
    begin: str
    user: str  # contains "{text}"
    assistant: str
    response_prefix: str = ""
    turn_end: str = ""

    def __post_init__(self):
        if "{text}" not in self.user:
            raise ValueError(f"template {self.name!r}: `user` must contain '{{text}}', got {self.user!r}")

    def render_prompt(self, conversation: Sequence[Turn], *, eos_token: str | None = None) -> str:
        """The text the model continues: every turn, ending with the opening of the assistant turn.

        `eos_token` is required only for multi-turn prompts under a template whose `turn_end` uses it.
        """
        turns = check_conversation(conversation, f"template {self.name!r}")
        turn_end = self.turn_end
        if "{eos}" in turn_end and len(turns) > 1:
            if eos_token is None:
                raise ValueError(f"template {self.name!r} needs eos_token for multi-turn prompts")
            turn_end = turn_end.replace("{eos}", eos_token)
        parts = [self.begin]
        for turn in turns:
            if turn.role == "user":
                parts.append(self.user.replace("{text}", turn.text))
                parts.append(self.assistant)
            else:
                parts.append(self.render_response(turn.text) + turn_end)
        return "".join(parts)

    def render_response(self, text: str) -> str:
        """The text of a response as it follows the rendered prompt."""
        return self.response_prefix + text


_TEMPLATES = (
    PromptTemplate("safe_rlhf", begin="BEGINNING OF CONVERSATION: ", user="USER: {text} ",
                   assistant="ASSISTANT:", turn_end="{eos}"),
    PromptTemplate("hh", begin="", user="\n\nHuman: {text}", assistant="\n\nAssistant:",
                   response_prefix=" "),
    PromptTemplate("alpaca", begin="Below is an instruction that describes a task. Write a response "
                   "that appropriately completes the request.\n\n",
                   user="### Instruction:\n{text}\n\n", assistant="### Response:\n", turn_end="\n\n"),
    PromptTemplate("llama2_chat", begin="", user="[INST] {text} [/INST]", assistant="",
                   response_prefix=" ", turn_end=" "),
    PromptTemplate("oasst_pythia", begin="", user="<|prompter|>{text}<|endoftext|>",
                   assistant="<|assistant|>", turn_end="<|endoftext|>"),
)
TEMPLATES: Mapping[str, PromptTemplate] = {t.name: t for t in _TEMPLATES}

DATASET_TEMPLATES: Mapping[str, str] = {
    "pku_safe_rlhf": "safe_rlhf",
    "hh_rlhf": "hh",
    "alpaca": "safe_rlhf",  # the paper's SFT(Alpaca) follows safe-rlhf's Alpaca-7B reproduction
}


def get_template(name: str) -> PromptTemplate:
    """The registered template `name`; raises KeyError listing the known names."""
    if name not in TEMPLATES:
        raise KeyError(f"unknown prompt template {name!r}; known: {sorted(TEMPLATES)}")
    return TEMPLATES[name]
