"""Anthropic HH-RLHF: transcripts split into the shared prompt and the two final replies.

Source layout (Hugging Face `Anthropic/hh-rlhf`): one folder per subset, each with
`train.jsonl.gz` and `test.jsonl.gz`; one JSON object a line with `chosen` and `rejected`, each a full
dialogue "\\n\\nHuman: ...\\n\\nAssistant: ...". The preference subsets are `HH_SUBSETS`
(`red-team-attempts` has another schema and is not a preference set).

Splitting: the prompt is everything up to and including the last "\\n\\nAssistant:"; the reply is the
rest, without the one space that follows the marker, so `prompt + " " + reply` gives back the
transcript. Multi-turn prompts are kept whole and parsed into alternating user/assistant turns.
Chosen and rejected must share the prompt. A row breaking any of this raises DataFormatError with its
file and line, unless `skip_malformed=True`, which skips it and counts it by reason.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence

from rlhf_jax.data.records import DataFormatError, Record, find_split_file, iter_records
from rlhf_jax.data.schema import ASSISTANT, USER, Conversation, PreferencePair, Turn, check_conversation

log = logging.getLogger(__name__)

SOURCE = "hh_rlhf"
HUMAN_MARK = "\n\nHuman:"
ASSISTANT_MARK = "\n\nAssistant:"
HH_SUBSETS = ("harmless-base", "helpful-base", "helpful-online", "helpful-rejection-sampled")
SPLIT_PATTERNS = ("{split}.jsonl.gz", "{split}.jsonl", "{split}.jsonl.xz")
_MARKS = re.compile(r"(\n\nHuman:|\n\nAssistant:)")


class MalformedTranscriptError(DataFormatError):
    """A row whose transcripts cannot be split into one shared prompt and two replies."""


def _drop_space(text: str) -> str:
    return text[1:] if text.startswith(" ") else text


def split_transcript(transcript: str) -> tuple[str, str]:
    """(prompt up to and including the last "\\n\\nAssistant:", final reply without its leading space).

    Raises ValueError when the transcript has no "\\n\\nAssistant:".
    """
    cut = transcript.rfind(ASSISTANT_MARK)
    if cut < 0:
        raise ValueError(f"no {ASSISTANT_MARK!r} in transcript {transcript[:80]!r}")
    cut += len(ASSISTANT_MARK)
    return transcript[:cut], _drop_space(transcript[cut:])


def split_pair(chosen: str, rejected: str) -> tuple[str, str, str]:
    """(shared prompt, chosen reply, rejected reply) of one HH-RLHF row.

    Raises ValueError when either transcript cannot be split or the two prompts differ.
    """
    prompt, chosen_reply = split_transcript(chosen)
    rejected_prompt, rejected_reply = split_transcript(rejected)
    if prompt != rejected_prompt:
        at = next((i for i, (a, b) in enumerate(zip(prompt, rejected_prompt)) if a != b),
                  min(len(prompt), len(rejected_prompt)))
        raise ValueError(f"chosen and rejected prompts differ from character {at}: "
                         f"{prompt[at:at + 40]!r} vs {rejected_prompt[at:at + 40]!r}")
    return prompt, chosen_reply, rejected_reply


def parse_dialogue(prompt: str) -> Conversation:
    """The turns of an HH prompt ("\\n\\nHuman: a\\n\\nAssistant: b ... \\n\\nAssistant:").

    The trailing, empty assistant marker is the place to answer and is not a turn. Raises ValueError
    for text before the first "\\n\\nHuman:" or turns that do not alternate.
    """
    if not prompt.endswith(ASSISTANT_MARK):
        raise ValueError(f"prompt does not end with {ASSISTANT_MARK!r}")
    parts = _MARKS.split(prompt[: -len(ASSISTANT_MARK)])
    if parts[0]:
        raise ValueError(f"text before the first {HUMAN_MARK!r}: {parts[0][:40]!r}")
    turns = [Turn(USER if mark == HUMAN_MARK else ASSISTANT, _drop_space(text))
             for mark, text in zip(parts[1::2], parts[2::2])]
    return check_conversation(turns, "HH-RLHF prompt")


def pair_from_row(rec: Record, subset: str) -> PreferencePair:
    """One HH-RLHF row as a preference pair; raises DataFormatError naming file, line and problem."""
    chosen, rejected = rec.str_field("chosen"), rec.str_field("rejected")
    try:
        prompt, chosen_reply, rejected_reply = split_pair(chosen, rejected)
        conversation = parse_dialogue(prompt)
    except ValueError as e:
        raise MalformedTranscriptError(f"{rec.where}: fields 'chosen'/'rejected': {e}") from e
    return PreferencePair(conversation, chosen_reply, rejected_reply,
                          {"source": SOURCE, "subset": subset, "where": rec.where})


def read_hh_file(
    path: str | os.PathLike, subset: str, *, skip_malformed: bool = False
) -> tuple[list[PreferencePair], dict[str, int]]:
    """Pairs of one HH-RLHF file and the counts `rows`, `kept`, `skipped_malformed`."""
    counts = {"rows": 0, "kept": 0, "skipped_malformed": 0}
    pairs = []
    for rec in iter_records(path):
        counts["rows"] += 1
        try:
            pairs.append(pair_from_row(rec, subset))
        except MalformedTranscriptError as e:
            if not skip_malformed:
                raise
            counts["skipped_malformed"] += 1
            log.warning("skipping malformed HH-RLHF row: %s", e)
    counts["kept"] = len(pairs)
    return pairs, counts


def read_hh_rlhf(
    root: str | os.PathLike, split: str, subsets: Sequence[str] = HH_SUBSETS, *,
    skip_malformed: bool = False,
) -> tuple[list[PreferencePair], dict[str, int]]:
    """Pairs of the chosen `subsets` of one split under `root` (the repository folder), and counts.

    Counts add up over the subsets; `rows` - `skipped_malformed` == `kept`.
    """
    unknown = [s for s in subsets if s not in HH_SUBSETS]
    if unknown or not subsets:
        raise ValueError(f"unknown HH-RLHF subsets {unknown}; choose from {list(HH_SUBSETS)}")
    total = {"rows": 0, "kept": 0, "skipped_malformed": 0}
    pairs: list[PreferencePair] = []
    for subset in subsets:
        path = find_split_file(os.path.join(os.fspath(root), subset), split, SPLIT_PATTERNS)
        subset_pairs, counts = read_hh_file(path, subset, skip_malformed=skip_malformed)
        pairs.extend(subset_pairs)
        for key, value in counts.items():
            total[key] += value
    log.info("HH-RLHF %s %s: %s", split, list(subsets), total)
    return pairs, total
