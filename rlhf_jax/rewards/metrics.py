"""Code metrics: unbiased pass@k, n@k with public-test filtering, per-difficulty reports.

pass@k (Chen et al. 2021; the paper's APPS metric is pass@5): with n >= k samples of which c pass,
    pass@k = 1 - C(n-c, k) / C(n, k) = 1 - prod_{i=n-c+1}^{n} (1 - k / i),
the product form avoiding huge binomials. Averaged over problems.

n@k (Li et al. 2022, AlphaCode; the paper's CodeContests metric is 10@1k): from k samples keep those
that pass the public tests, submit n of them, the problem is solved if a submission passes the
hidden tests. With the n submissions drawn uniformly from the m survivors (c of them correct), the
expected solve rate is pass@min(n, m) over the survivors: 1 - C(m-c, n) / C(m, n). No clustering.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence

OVERALL = "all"


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem: n samples, c of them correct (needs 0 <= c <= n, 1 <= k <= n)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    product = 1.0
    for i in range(n - c + 1, n + 1):
        product *= 1.0 - k / i
    return 1.0 - product


def n_at_k(public_passed: Sequence[bool], hidden_passed: Sequence[bool], n: int) -> float:
    """Expected n@k for one problem from its k samples' public and hidden test outcomes.

    Samples failing the public tests are never submitted; `n` of the survivors are (all if fewer).
    """
    if len(public_passed) != len(hidden_passed):
        raise ValueError(f"{len(public_passed)} public outcomes but {len(hidden_passed)} hidden ones")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    survivors = [hidden for public, hidden in zip(public_passed, hidden_passed) if public]
    if not survivors:
        return 0.0
    return pass_at_k(len(survivors), sum(survivors), min(n, len(survivors)))


@dataclasses.dataclass(frozen=True)
class ProblemSamples:
    """The test outcomes of one problem's samples: hidden tests, and public tests when filtering."""

    problem_id: str
    difficulty: str
    hidden_passed: tuple[bool, ...]
    public_passed: tuple[bool, ...] | None = None  # None: no public-test filter (APPS)


@dataclasses.dataclass(frozen=True)
class CodeReport:
    """pass@k (and n@k) per difficulty and overall: `rows[difficulty][metric]` and problem counts."""

    rows: dict[str, dict[str, float]]
    counts: dict[str, int]
    samples_per_problem: int

    def to_json(self) -> str:
        """The report as JSON text (metrics as fractions)."""
        return json.dumps({"samples_per_problem": self.samples_per_problem, "problems": self.counts,
                           "metrics": self.rows}, indent=2, sort_keys=True)

    def to_markdown(self, title: str = "Code generation") -> str:
        """A Markdown table: one row per difficulty plus "all", metrics in percent (as in the paper)."""
        metrics = list(next(iter(self.rows.values())))
        lines = [f"### {title} ({self.samples_per_problem} samples per problem)", "",
                 "| difficulty | problems | " + " | ".join(metrics) + " |",
                 "|---|---:|" + "---:|" * len(metrics)]
        for name, row in self.rows.items():
            cells = " | ".join(f"{100 * row[m]:.1f}" for m in metrics)
            lines.append(f"| {name} | {self.counts[name]} | {cells} |")
        return "\n".join(lines) + "\n"


def code_report(samples: Iterable[ProblemSamples], *, ks: Sequence[int] = (1, 5), n_submit: int | None = None,
                difficulties: Sequence[str] | None = None) -> CodeReport:
    """pass@k for each k in `ks` (and n@k with `n_submit`), per difficulty and overall.

    Every problem must have the same number of samples, at least max(ks). Difficulties appear in
    the order of `difficulties` (default: first appearance); a named difficulty with no problems
    raises ValueError, so that a missing split never reads as a zero.
    """
    samples = list(samples)
    if not samples:
        raise ValueError("code_report needs at least one problem")
    sizes = {len(s.hidden_passed) for s in samples}
    if len(sizes) != 1:
        raise ValueError(f"all problems need the same number of samples, got sizes {sorted(sizes)}")
    k_samples = sizes.pop()
    if max(ks) > k_samples:
        raise ValueError(f"pass@{max(ks)} needs at least {max(ks)} samples per problem, got {k_samples}")
    order = list(difficulties) if difficulties is not None else list(dict.fromkeys(s.difficulty for s in samples))
    groups: dict[str, list[ProblemSamples]] = {name: [] for name in order}
    for s in samples:
        if s.difficulty not in groups:
            raise ValueError(f"problem {s.problem_id}: difficulty {s.difficulty!r} not in {order}")
        groups[s.difficulty].append(s)
    empty = [name for name, group in groups.items() if not group]
    if empty:
        raise ValueError(f"no problems of difficulty {empty}")
    groups[OVERALL] = samples
    rows, counts = {}, {}
    for name, group in groups.items():
        row = {f"pass@{k}": sum(pass_at_k(k_samples, sum(s.hidden_passed), k) for s in group) / len(group)
               for k in ks}
        if n_submit is not None:
            row[f"{n_submit}@{k_samples}"] = sum(
                n_at_k(s.public_passed if s.public_passed is not None else (True,) * k_samples, s.hidden_passed,
                       n_submit) for s in group) / len(group)
        rows[name], counts[name] = row, len(group)
    return CodeReport(rows, counts, k_samples)
