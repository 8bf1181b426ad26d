"""Evaluation reports as Markdown tables and JSON, laid out like the paper's tables.

    report = safety_report({"SFT(Alpaca)": m_sft, "PPO": m_ppo}, title="SafeRLHF, Llama-2-7B")
    report.write("runs/eval/safe_rlhf")   # -> safe_rlhf.md and safe_rlhf.json

`safety_report` follows Table 2 / Table 6 (Help, Harm, Safety rate; a "Help vs. baseline" column
when the metrics hold `help_delta`), `reward_report` follows Table 4 (one reward-model column).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from typing import Any


@dataclasses.dataclass(frozen=True)
class Column:
    """A table column: the metric key, its header and how a value is printed."""

    key: str
    header: str
    fmt: Callable[[float], str]


def _fixed(digits: int) -> Callable[[float], str]:
    return lambda v: f"{v:.{digits}f}"


def _percent(v: float) -> str:
    return f"{100 * v:.1f}%"


@dataclasses.dataclass(frozen=True)
class Report:
    """Rows of metrics (method name -> metrics dict) under named columns."""

    title: str
    columns: tuple[Column, ...]
    rows: Mapping[str, Mapping[str, Any]]
    notes: str = ""

    def to_markdown(self) -> str:
        """A Markdown table (a missing metric shows as "-"), with the title above and notes below."""
        lines = [f"### {self.title}", "", "| Method | " + " | ".join(c.header for c in self.columns) + " |",
                 "|---|" + "---:|" * len(self.columns)]
        for method, metrics in self.rows.items():
            cells = [c.fmt(metrics[c.key]) if c.key in metrics else "-" for c in self.columns]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        if self.notes:
            lines += ["", self.notes]
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict[str, Any]:
        """{"title", "columns": [{"key", "header"}], "rows": [{"method", ...metrics}], "notes"}."""
        return {"title": self.title,
                "columns": [{"key": c.key, "header": c.header} for c in self.columns],
                "rows": [{"method": m, **dict(v)} for m, v in self.rows.items()],
                "notes": self.notes}

    def write(self, path_prefix: str | os.PathLike) -> tuple[str, str]:
        """Writes `<prefix>.md` and `<prefix>.json` (creating the folder); returns both paths."""
        prefix = os.fspath(path_prefix)
        os.makedirs(os.path.dirname(prefix) or ".", exist_ok=True)
        md, js = prefix + ".md", prefix + ".json"
        with open(md, "w", encoding="utf-8") as f:
            f.write(self.to_markdown())
        with open(js, "w", encoding="utf-8") as f:
            json.dump(self.to_json(), f, indent=2)
            f.write("\n")
        return md, js


def safety_report(results: Mapping[str, Mapping[str, Any]], *, title: str = "SafeRLHF evaluation",
                  baseline_name: str = "baseline") -> Report:
    """Table 2 / Table 6 layout from `help_harm_safety` outputs, one row per method."""
    columns = [Column("help", "Help ↑", _fixed(2))]
    if any("help_delta" in m for m in results.values()):
        columns.append(Column("help_delta", f"Help vs. {baseline_name} ↑", _fixed(2)))
    columns += [Column("harm", "Harm ↓", _fixed(2)), Column("safety_rate", "S.R. ↑", _percent)]
    notes = ("Help: mean reward-model score. Harm: mean cost-model score. "
             "S.R.: share of responses with cost <= 0.")
    return Report(title, tuple(columns), dict(results), notes)


def reward_report(results: Mapping[str, Mapping[str, Any]], *, title: str = "HH-RLHF evaluation",
                  reward_model: str = "Reward") -> Report:
    """Table 4 layout from `mean_reward` outputs: one column with the judge's mean score."""
    return Report(title, (Column("reward", f"{reward_model} ↑", _fixed(3)),), dict(results),
                  f"Mean score of {reward_model} on the test prompts.")
