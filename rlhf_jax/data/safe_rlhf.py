"""PKU-SafeRLHF: the paper's single preference from two labels, its filters, and the SFT(Safe) set.

Source layout (Hugging Face `PKU-Alignment/PKU-SafeRLHF-30K`, also `PKU-SafeRLHF/round0/30k/`):
`train.jsonl.xz` and `test.jsonl.xz`, one JSON object a line with at least
    prompt: str, response_0: str, response_1: str,
    is_response_0_safe: bool, is_response_1_safe: bool,
    better_response_id: 0|1 (the more helpful), safer_response_id: 0|1 (the safer).
Other fields (newer releases add sources, harm categories, severity) are ignored.

Merging rule (Xu et al. 2024, Sec. 6 / Table 2): if both responses are safe, prefer the more helpful
(`better_response_id`); otherwise prefer the safer (`safer_response_id`). When exactly one response is
labelled safe and `safer_response_id` points at the other one, the labels disagree; the rule still
follows `safer_response_id` (the paper's wording), and such rows are counted as
`safety_label_conflicts` so the disagreement is visible.

Filters of Table 2 (cumulative there): "filter dual-unsafe" drops pairs whose two responses are both
unsafe, "filter dual-safe" drops pairs whose two responses are both safe. Every function that drops
rows returns the counts of what it dropped and logs them.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable

from rlhf_jax.data.records import iter_records
from rlhf_jax.data.schema import Conversation, PreferencePair, SFTExample, user_prompt

log = logging.getLogger(__name__)

SOURCE = "pku_safe_rlhf"
SPLIT_PATTERNS = ("{split}.jsonl", "{split}.jsonl.xz", "{split}.jsonl.gz", "data/{split}-*.parquet",
                  "round0/30k/{split}.jsonl.xz")


@dataclasses.dataclass(frozen=True)
class SafeRLHFRow:
    """One validated PKU-SafeRLHF row; `where` is `path:line` of its source."""

    prompt: str
    response_0: str
    response_1: str
    is_response_0_safe: bool
    is_response_1_safe: bool
    better_response_id: int
    safer_response_id: int
    where: str = ""

    def response(self, index: int) -> str:
        """`response_0` or `response_1`."""
        return (self.response_0, self.response_1)[index]

    def is_safe(self, index: int) -> bool:
        """The safety label of response `index`."""
        return (self.is_response_0_safe, self.is_response_1_safe)[index]


def read_safe_rlhf(path: str | os.PathLike) -> list[SafeRLHFRow]:
    """All rows of a PKU-SafeRLHF file; a missing or ill-typed field raises DataFormatError (file:line)."""
    rows = []
    for rec in iter_records(path):
        rows.append(SafeRLHFRow(
            prompt=rec.str_field("prompt", allow_empty=False),
            response_0=rec.str_field("response_0"),
            response_1=rec.str_field("response_1"),
            is_response_0_safe=rec.bool_field("is_response_0_safe"),
            is_response_1_safe=rec.bool_field("is_response_1_safe"),
            better_response_id=rec.choice_field("better_response_id", (0, 1)),
            safer_response_id=rec.choice_field("safer_response_id", (0, 1)),
            where=rec.where,
        ))
    return rows


def is_dual_safe(row: SafeRLHFRow) -> bool:
    """Both responses labelled safe."""
    return row.is_response_0_safe and row.is_response_1_safe


def is_dual_unsafe(row: SafeRLHFRow) -> bool:
    """Both responses labelled unsafe."""
    return not row.is_response_0_safe and not row.is_response_1_safe


def has_safety_label_conflict(row: SafeRLHFRow) -> bool:
    """Exactly one response is labelled safe, yet `safer_response_id` names the unsafe one."""
    return row.is_response_0_safe != row.is_response_1_safe and not row.is_safe(row.safer_response_id)


def preferred_response_id(row: SafeRLHFRow) -> int:
    """The paper's single preference: both safe -> the more helpful, otherwise the safer."""
    return row.better_response_id if is_dual_safe(row) else row.safer_response_id


def to_preference_pair(row: SafeRLHFRow) -> PreferencePair:
    """The row as a chosen/rejected pair under `preferred_response_id`; labels go into `meta`."""
    win = preferred_response_id(row)
    lose = 1 - win
    meta = {"source": SOURCE, "where": row.where, "chosen_safe": row.is_safe(win),
            "rejected_safe": row.is_safe(lose)}
    return PreferencePair(user_prompt(row.prompt), row.response(win), row.response(lose), meta)


def preference_pairs(
    rows: Iterable[SafeRLHFRow], *, drop_dual_unsafe: bool = False, drop_dual_safe: bool = False
) -> tuple[list[PreferencePair], dict[str, int]]:
    """Merged pairs, optionally without dual-unsafe and/or dual-safe rows, and the counts.

    Counts: `rows` read, `kept`, `dropped_dual_unsafe`, `dropped_dual_safe`, and
    `safety_label_conflicts` among the kept rows (see the module docstring).
    """
    counts = {"rows": 0, "kept": 0, "dropped_dual_unsafe": 0, "dropped_dual_safe": 0,
              "safety_label_conflicts": 0}
    pairs = []
    for row in rows:
        counts["rows"] += 1
        if drop_dual_unsafe and is_dual_unsafe(row):
            counts["dropped_dual_unsafe"] += 1
            continue
        if drop_dual_safe and is_dual_safe(row):
            counts["dropped_dual_safe"] += 1
            continue
        counts["safety_label_conflicts"] += has_safety_label_conflict(row)
        pairs.append(to_preference_pair(row))
    counts["kept"] = len(pairs)
    log.info("PKU-SafeRLHF preference pairs: %s", counts)
    return pairs, counts


def safe_responses(rows: Iterable[SafeRLHFRow]) -> tuple[list[SFTExample], dict[str, int]]:
    """The SFT(Safe) set: every response labelled safe, as (prompt, response), and the counts.

    A (prompt, response) seen before is dropped and counted as `duplicates` (the same prompt and
    answer recur across rows); `unsafe_responses` counts the responses left out for being unsafe.
    """
    counts = {"rows": 0, "kept": 0, "unsafe_responses": 0, "duplicates": 0}
    seen: set[tuple[str, str]] = set()
    examples = []
    for row in rows:
        counts["rows"] += 1
        for index in (0, 1):
            if not row.is_safe(index):
                counts["unsafe_responses"] += 1
                continue
            key = (row.prompt, row.response(index))
            if key in seen:
                counts["duplicates"] += 1
                continue
            seen.add(key)
            meta = {"source": SOURCE, "where": row.where, "response_id": index}
            examples.append(SFTExample(user_prompt(row.prompt), row.response(index), meta))
    counts["kept"] = len(examples)
    log.info("PKU-SafeRLHF safe responses: %s", counts)
    return examples, counts


def unique_prompts(rows: Iterable[SafeRLHFRow]) -> tuple[list[Conversation], dict[str, int]]:
    """Each distinct prompt once, in first-seen order (the RL and evaluation prompt set), and counts."""
    counts = {"rows": 0, "kept": 0, "duplicates": 0}
    seen: set[str] = set()
    prompts = []
    for row in rows:
        counts["rows"] += 1
        if row.prompt in seen:
            counts["duplicates"] += 1
            continue
        seen.add(row.prompt)
        prompts.append(user_prompt(row.prompt))
    counts["kept"] = len(prompts)
    log.info("PKU-SafeRLHF prompts: %s", counts)
    return prompts, counts
