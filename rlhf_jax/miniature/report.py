"""The miniature's report: tables beside the paper's numbers, the claims checked, plots.

Results come per seed (a list of dicts, one per seed); a cell shows the mean, and "mean ± sd" (the
sample standard deviation over seeds) when there are several. A claim is "reproduced" when it holds
on the means; the line also says in how many seeds it held, so one lucky seed cannot carry it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence

import numpy as np

from rlhf_jax.miniature import paper

DIFFS = ("introductory", "interview", "competition")


def stats(values: Sequence[float]) -> tuple[float, float]:
    """(mean, sample sd; 0 for one value) of the finite values (nan if none)."""
    v = np.array([x for x in values if x is not None and math.isfinite(x)], float)
    if not len(v):
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def cell(values: Sequence[float], fmt: str = "{:.2f}", scale: float = 1.0) -> str:
    mean, sd = stats([None if x is None else x * scale for x in values])
    if math.isnan(mean):
        return "-"
    return fmt.format(mean) + (f" ± {fmt.format(sd)}" if len(values) > 1 else "")


def _paper(x, fmt="{:.1f}") -> str:
    return "-" if x is None else fmt.format(x)


# ------------------------------------------------------------------------------------------ code
def code_metric(ev: dict) -> tuple[str, Callable[[dict, str], float]]:
    """The code metric of an evaluation: pass@5 (sampled) when present, else greedy pass@1."""
    if "sampled" in ev:
        k = max(int(m.split("@")[1]) for m in ev["sampled"]["all"])
        return f"pass@{k}", lambda e, d: e["sampled"][d][f"pass@{k}"]
    return "greedy pass@1", lambda e, d: e["greedy"][d]


def code_table(runs: Sequence[dict], rows: Sequence[str], paper_rows: dict, title: str) -> list[str]:
    """Markdown: one row per method, our metric per difficulty (%), the paper's beside it."""
    first = runs[0]["eval"][rows[0]]
    name, metric = code_metric(first)
    has_greedy = name != "greedy pass@1"
    head = [f"| method | {name} intro | inter | comp | all |" + (" greedy pass@1 all |" if has_greedy else "")
            + " paper pass@5 intro / inter / comp |"]
    lines = [f"### {title}", "", *head, "|---" * (6 + has_greedy) + "|"]
    for row in rows:
        evs = [r["eval"][row] for r in runs if row in r["eval"]]
        if not evs:
            continue
        cells = [cell([metric(e, d) for e in evs], "{:.1f}", 100) for d in (*DIFFS, "all")]
        greedy = [cell([e["greedy"]["all"] for e in evs], "{:.1f}", 100)] if has_greedy else []
        ref = paper_rows.get(row)
        ref = " / ".join(_paper(x) for x in ref) if ref else "-"
        lines.append(f"| {row} | " + " | ".join(cells + greedy) + f" | {ref} |")
    counts = first["problems"]
    lines += ["", f"Test problems: {counts.get('all')} ({', '.join(f'{d} {counts[d]}' for d in DIFFS if d in counts)})."]
    return lines + [""]


# ---------------------------------------------------------------------------------------- safety
def safety_table(runs: Sequence[dict], rows: Sequence[str]) -> list[str]:
    lines = ["| method | Help | Harm | Safety rate | gold reward | paper Help / Harm / S.R. |", "|---|---|---|---|---|---|"]
    for row in rows:
        evs = [r["eval"][row] for r in runs if row in r["eval"]]
        if not evs:
            continue
        ref = paper.TABLE2.get(row)
        ref = f"{_paper(ref[0], '{:.2f}')} / {_paper(ref[1], '{:.2f}')} / {_paper(ref[2])}%" if ref else "-"
        lines.append(f"| {row} | {cell([e['help'] for e in evs])} | {cell([e['harm'] for e in evs])} | "
                     f"{cell([e['safety_rate'] for e in evs], '{:.1f}', 100)}% | {cell([e['reward'] for e in evs])} | {ref} |")
    return lines + [""]


def reward_table(runs: Sequence[dict], rows: dict[str, str]) -> list[str]:
    """Table 4: gold reward (ours) beside the OpenAssistant reward (paper); `rows` maps our row to
    the paper's row name."""
    lines = ["| method | gold reward (ours) | paper reward |", "|---|---|---|"]
    for ours, theirs in rows.items():
        evs = [r["eval"][ours] for r in runs if ours in r["eval"]]
        if evs:
            lines.append(f"| {theirs} | {cell([e['reward'] for e in evs])} | {paper.TABLE4[theirs]:.3f} |")
    return lines + [""]


# ---------------------------------------------------------------------------------------- claims
def claim_line(key: str, per_seed: Sequence[bool | None], detail: str) -> tuple[bool | None, str]:
    """("reproduced" on the means, the line), per_seed the claim's truth in each seed."""
    known = [x for x in per_seed if x is not None]
    if not known:
        return None, f"- **not run**: {paper.CLAIMS[key]}"
    held = sum(known)
    ok = held * 2 > len(known)  # on the means for one seed; the majority of seeds otherwise
    verdict = "reproduced" if ok else "NOT reproduced"
    seeds = f" (held in {held}/{len(known)} seeds)" if len(known) > 1 else ""
    return ok, f"- **{verdict}**{seeds}: {paper.CLAIMS[key]} Ours: {detail}"


def claims_section(checks: dict[str, tuple[Sequence[bool | None], str]]) -> tuple[dict, list[str]]:
    """({claim: reproduced or None}, the "## Claims" Markdown lines) of `claims` checks."""
    verdicts, lines = {}, ["## Claims", ""]
    for key, (per_seed, detail) in checks.items():
        verdicts[key], line = claim_line(key, per_seed, detail)
        lines.append(line)
    return verdicts, lines


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finish(plt, fig, ax, path: str, title: str, ylabel: str) -> str:
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def save_bar_plot(path: str, title: str, groups: dict[str, dict[str, float]], ylabel: str) -> str:
    """Grouped bars: groups[method][column] -> value."""
    plt = _pyplot()
    methods = list(groups)
    columns = list(next(iter(groups.values())))
    width = 0.8 / max(len(methods), 1)
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(columns), 3.2))
    for i, m in enumerate(methods):
        ax.bar(np.arange(len(columns)) + i * width, [groups[m][c] for c in columns], width, label=m)
    ax.set_xticks(np.arange(len(columns)) + width * (len(methods) - 1) / 2, columns,
                  rotation=25 if len(columns) > 5 else 0, ha="right" if len(columns) > 5 else "center")
    return _finish(plt, fig, ax, path, title, ylabel)


def save_curves(path: str, title: str, curves: dict[str, list[tuple[int, float]]], ylabel: str) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for name, points in curves.items():
        if points:
            x, y = zip(*points)
            ax.plot(x, y, marker=".", label=name)
    ax.set_xlabel("iteration")
    return _finish(plt, fig, ax, path, title, ylabel)


def relpath(path: str, start: str) -> str:
    return os.path.relpath(path, start)
