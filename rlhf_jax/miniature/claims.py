"""Each of the paper's claims (`paper.CLAIMS`) as a test on the miniature's results, seed by seed.

A check returns (per-seed truth values, a detail string with the numbers); `report.claim_line`
turns it into the summary line. Checks whose rows were not run return no truth values ("not run").
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rlhf_jax.miniature.report import code_metric, stats


def _mean(values) -> float:
    return stats(list(values))[0]


def table1(theory: dict) -> tuple[list[bool], str]:
    pol = theory["table1"]["policies"]
    dpo_loss = pol["dpo_counterexample"]["dpo_loss"]
    kl_obj = float(pol["dpo_counterexample"]["kl_objective"])
    y3 = pol["kl_optimum"]["policy"][2]
    ok = dpo_loss < 1e-6 and kl_obj == -math.inf and y3 == 0.0
    return [ok], (f"DPO loss at (0.1, 0, 0.9) = {dpo_loss:.2g}; KL objective there = {kl_obj}; "
                  f"the KL-regularized optimum gives y3 {y3}.")


def synthetic(theory: dict) -> tuple[list[bool], str]:
    ood = theory["synthetic"]["ood"]
    dpo, ppo, ref = ood["dpo"], ood["ppo"], ood["reference"]
    ok = dpo["raised_above_reference"] > 0 and ppo["ood_mass"] < dpo["ood_mass"]
    rise = dpo["largest_rise"]
    return [ok], (f"DPO raised {dpo['raised_above_reference']} OOD cells above the reference (largest "
                  f"{rise['reference']:.3f} -> {rise['method']:.3f}); OOD mass per prompt: reference "
                  f"{ref['ood_mass']:.3f}, DPO {dpo['ood_mass']:.3f}, PPO {ppo['ood_mass']:.3f}.")


def _compare(runs: Sequence[dict], key: str, a: str, b: str, op, fmt="{:.1%}") -> tuple[list[bool | None], str]:
    """op(metric of row a, metric of row b) per seed, and the means."""
    per_seed, xs, ys = [], [], []
    for r in runs:
        ev = r.get("eval", {})
        if a in ev and b in ev:
            x, y = ev[a][key], ev[b][key]
            per_seed.append(bool(op(x, y)))
            xs.append(x)
            ys.append(y)
    if not per_seed:
        return [], ""
    return per_seed, f"{a} {fmt.format(_mean(xs))} vs {b} {fmt.format(_mean(ys))} ({key.replace('_', ' ')})."


def safety_claims(runs: Sequence[dict], rounds: int) -> dict[str, tuple[list, str]]:
    gt, ge = (lambda x, y: x > y), (lambda x, y: x >= y)
    last = f"DPO-Iter round {rounds}"
    out = {"shift": _compare(runs, "safety_rate", last, "DPO", gt),
           "sft_safe": _compare(runs, "safety_rate", "DPO + SFT(Safe)", "DPO", gt),
           "filters": _compare(runs, "safety_rate", "+ filter dual-safe", "DPO + SFT(Safe)", gt),
           "rounds": _compare(runs, "safety_rate", last, "DPO-Iter round 1", ge)}
    sr, text_sr = _compare(runs, "safety_rate", "PPO", "DPO", ge)
    hp, text_hp = _compare(runs, "help", "PPO", "DPO", gt, "{:.2f}")
    out["ppo_safety"] = ([a and b for a, b in zip(sr, hp)], f"{text_sr} {text_hp}")
    return out


def table4_claim(runs: Sequence[dict], rounds: int) -> tuple[list[bool], str]:
    last = f"DPO-Iter round {rounds}"
    per_seed, parts = [], {}
    for r in runs:
        ev = r.get("eval", {})
        need = ("PPO", last, "DPO", "RRHF", "PRO")
        if not all(k in ev for k in need):
            continue
        g = {k: ev[k]["reward"] for k in need}
        per_seed.append(g["PPO"] > g[last] > g["DPO"] and max(g["RRHF"], g["PRO"]) < g["DPO"])
        for k, v in g.items():
            parts.setdefault(k, []).append(v)
    detail = ", ".join(f"{k.replace(last, 'DPO-Iter')} {_mean(v):.2f}" for k, v in parts.items())
    return per_seed, f"gold reward: {detail}." if parts else ""


def code_claims(runs: Sequence[dict], ablation: bool) -> dict[str, tuple[list, str]]:
    if not runs:
        return {}
    name, metric = code_metric(runs[0]["eval"]["SFT"])

    def compare(a, b, op):
        per_seed, xs, ys = [], [], []
        for r in runs:
            ev = r["eval"]
            if a in ev and b in ev:
                x, y = metric(ev[a], "all"), metric(ev[b], "all")
                per_seed.append(bool(op(x, y)))
                xs.append(x)
                ys.append(y)
        n = runs[0]["eval"][a]["problems"]["all"] if a in runs[0]["eval"] else 0
        return per_seed, f"{a} {_mean(xs):.1%} vs {b} {_mean(ys):.1%} ({name} on {n} test problems)."

    out = {"ppo_code": compare("PPO", "SFT", lambda x, y: x > y),
           "dpo_iter_code": compare("DPO-Iter", "SFT", lambda x, y: x <= y)}
    if ablation:
        out["tricks"] = compare("PPO", "PPO (baseline)", lambda x, y: x > y)
    return out
