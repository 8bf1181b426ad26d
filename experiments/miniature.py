"""The paper in miniature: every table's analogue on a laptop CPU, several seeds, the claims checked.

    python -m experiments.miniature                                  # ~30 min on 2 cores
    python -m experiments.miniature --config.seeds=0,1,2      # more dialogue seeds, more time
    python -m experiments.miniature --config.parts=safety     # one half only (theory, safety, code)

On the bundled tasks (`rlhf_jax.miniature`), tiny LLaMAs trained by the same experiment modules a
paper-scale run uses, evaluated by held-out gold judges (dialogue) and the sandbox (code):
- Table 2 (SafeRLHF): SFT(Alpaca), SFT(Safe), DPO, DPO + SFT(Safe), the two filters, DPO-Iter
  rounds 1-4, PPO: Help / Harm / Safety rate (`safety_pipeline`).
- Table 4 (dialogue reward): SFT, RRHF, PRO, DPO, DPO-Iter, PPO by the gold reward.
- Table 3 (code): the PPO tricks added one by one; Tables 7/8: SFT vs DPO-Iter vs PPO, pass@k by
  difficulty (`code_pipeline`).
- The theory experiment (Table 1, Section 4.2).
Each seed trains everything again from a new random initialization (the bundled data stays the
same); tables show mean ± sd over seeds and the summary names the claims that reproduced and those
that did not, with the numbers. Writes `report.md`, `results.json` and PNG plots to `workdir`;
with `--config.readme=README.md` the README's Results section is replaced by this report (plots
copied to `docs/results/`). Stages already done in `workdir` are not run again.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time

from experiments.quickstart import BundleSize, code_section, make_bundle, run_theory, theory_lines
from rlhf_jax import config as config_lib
from rlhf_jax.miniature import claims as claims_lib
from rlhf_jax.miniature import report, stages
from rlhf_jax.miniature.code_pipeline import CodeScale, run_code
from rlhf_jax.miniature.safety_pipeline import DPO_ROWS, SafetyScale, run_safety

README_START, README_END = "<!-- miniature-results:start -->", "<!-- miniature-results:end -->"
PARTS = ("theory", "safety", "code")


@dataclasses.dataclass(frozen=True)
class MiniatureConfig:
    code: CodeScale = CodeScale(eval_samples=5)
    safety: SafetyScale = SafetyScale()
    bundle: BundleSize = BundleSize()
    seeds: tuple[int, ...] = (0, 1)  # the dialogue tables (Tables 2, 4): ~6 min per seed
    code_seeds: tuple[int, ...] = (0,)  # the code tables (Tables 3, 7): ~15 min per seed
    parts: tuple[str, ...] = PARTS
    progress: bool = True
    readme: str = ""  # a README.md whose Results section this run regenerates
    workdir: str = "runs/miniature"


def get_config(preset_name: str | None = None) -> MiniatureConfig:
    if preset_name is not None:
        raise ValueError(f"experiments.miniature has no preset {preset_name!r}; set fields with --config.*")
    return MiniatureConfig()


def validate(cfg: MiniatureConfig) -> None:
    unknown = [p for p in cfg.parts if p not in PARTS]
    if unknown or not cfg.parts:
        raise ValueError(f"parts={cfg.parts!r}: choose one or more of {PARTS}")
    for key in ("seeds", "code_seeds"):
        seeds = getattr(cfg, key)
        if not seeds or len(set(seeds)) != len(seeds):
            raise ValueError(f"{key}={seeds!r} must be distinct and at least one")
    if cfg.readme and not os.path.isfile(cfg.readme):
        raise FileNotFoundError(f"readme={cfg.readme!r} is not a file")


def safety_section(runs: list[dict], rounds: int) -> list[str]:
    rows = ["SFT(Alpaca)", "SFT(Safe)", "PPO", *(name for name, _, _ in DPO_ROWS),
            *(f"DPO-Iter round {r}" for r in range(1, rounds + 1))]
    rm = [r["reward_model"].get("accuracy") for r in runs if r.get("reward_model")]
    lines = ["## Table 2: safety (gold Help / Harm / Safety rate; paper: Llama-2-7B on PKU-SafeRLHF)", "",
             f"{runs[0]['prompts']} distinct test prompts, one greedy answer each, judged by the held-out gold "
             "evaluators (Harm = gold cost, safe iff cost <= 0). The reward model PPO and DPO-Iter train against "
             f"was trained on the merged preference; its held-out pair accuracy: {report.cell(rm, '{:.1%}')}.", ""]
    lines += report.safety_table(runs, rows)
    lines += ["## Table 4: dialogue reward (gold reward; paper: OpenAssistant reward on HH-RLHF)", ""]
    lines += report.reward_table(runs, {"SFT(Alpaca)": "SFT", "RRHF": "RRHF", "PRO": "PRO", "DPO": "DPO",
                                        f"DPO-Iter round {rounds}": "DPO-Iter", "PPO": "PPO"})
    return lines


def _plots(runs_safety: list[dict], workdir: str, rounds: int) -> list[str]:
    plots = os.path.join(workdir, "plots")
    os.makedirs(plots, exist_ok=True)
    rows = ["SFT(Alpaca)", "DPO", "DPO + SFT(Safe)", "+ filter dual-unsafe", "+ filter dual-safe",
            *(f"DPO-Iter round {r}" for r in range(1, rounds + 1)), "PPO"]
    panels = {"safety rate (%)": ("safety_rate", 100.0), "Help (gold helpfulness)": ("help", 1.0),
              "gold reward": ("reward", 1.0)}
    links = []
    for title, (key, scale) in panels.items():
        values = {}
        for row in rows:
            evs = [r["eval"][row] for r in runs_safety if row in r["eval"]]
            if evs:
                values[row] = scale * report.stats([e[key] for e in evs])[0]
        path = report.save_bar_plot(os.path.join(plots, f"table2_{key}.png"), f"Table 2 analogue: {title}",
                                    {"mean over seeds": values}, "")
        links.append(f"![{title}]({report.relpath(path, workdir)})")
    return [" ".join(links), ""]


def update_readme(readme: str, text: str, workdir: str) -> None:
    """Replaces README's block between the markers with `text`, images copied to docs/results/."""
    root = os.path.dirname(os.path.abspath(readme))
    target = os.path.join(root, "docs", "results")
    os.makedirs(target, exist_ok=True)
    for sub in ("plots", "theory"):
        src = os.path.join(workdir, sub)
        for name in sorted(os.listdir(src)) if os.path.isdir(src) else ():
            if name.endswith(".png") and f"]({sub}/{name})" in text:  # only the images the report shows
                shutil.copy(os.path.join(src, name), os.path.join(target, name))
                text = text.replace(f"]({sub}/{name})", f"](docs/results/{name})")
    text = "\n".join("#" + line if line.startswith("#") else line for line in text.split("\n"))  # under ## Results
    with open(readme) as f:
        old = f.read()
    if README_START not in old or README_END not in old:
        raise ValueError(f"{readme}: no {README_START} ... {README_END} block to replace")
    head, rest = old.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    with open(readme + ".tmp", "w") as f:  # written whole, then moved over: an error loses nothing
        f.write(head + README_START + "\n" + text + README_END + tail)
    os.replace(readme + ".tmp", readme)


def main(cfg: MiniatureConfig) -> dict:
    validate(cfg)
    t0 = time.time()
    os.makedirs(cfg.workdir, exist_ok=True)
    theory = run_theory(cfg.workdir) if "theory" in cfg.parts else None
    bundle = make_bundle(cfg.workdir, cfg.bundle, 0)
    safety_runs, code_runs, seconds = [], [], {}
    for seed in dict.fromkeys(cfg.seeds + cfg.code_seeds):
        st = stages.Stages(os.path.join(cfg.workdir, f"seed_{seed}"))
        if "safety" in cfg.parts and seed in cfg.seeds:
            safety_runs.append(run_safety(st, bundle, cfg.safety, seed=seed, progress=cfg.progress))
        if "code" in cfg.parts and seed in cfg.code_seeds:
            code_runs.append(run_code(st, bundle, cfg.code, seed=seed, ablation=True, progress=cfg.progress))
        seconds[seed] = st.all_seconds
    rounds = cfg.safety.iter_rounds
    lines = [f"# The paper in miniature (dialogue seeds {', '.join(map(str, cfg.seeds))}; code seeds "
             f"{', '.join(map(str, cfg.code_seeds))})", ""]
    checks = {}
    if theory is not None:
        lines += theory_lines(theory, cfg.workdir)
        checks.update(table1=claims_lib.table1(theory), synthetic=claims_lib.synthetic(theory))
    if safety_runs:
        lines += safety_section(safety_runs, rounds) + _plots(safety_runs, cfg.workdir, rounds)
        checks.update(claims_lib.safety_claims(safety_runs, rounds))
        checks["table4"] = claims_lib.table4_claim(safety_runs, rounds) if cfg.safety.ranking else ([], "")
    if code_runs:
        lines += ["## Tables 3 and 7: code (paper: CodeLlama-34B on APPS)", ""]
        lines += _code_tables(code_runs, cfg.workdir)
        checks.update(claims_lib.code_claims(code_runs, ablation=True))
    verdicts, claim_lines = report.claims_section(checks)
    lines += claim_lines
    total = time.time() - t0
    compute = sum(sum(v.values()) for v in seconds.values()) + (theory["seconds"] if theory else 0.0)
    lines += ["", f"Training and evaluation took {compute / 60:.1f} min on {os.cpu_count()} CPU cores (this "
              f"invocation {total / 60:.1f} min; stages done before are reused, their times stored with them).", ""]
    text = "\n".join(lines)
    print("\n" + text)
    with open(os.path.join(cfg.workdir, "report.md"), "w") as f:
        f.write(text)
    result = {"safety": safety_runs, "code": code_runs, "claims": verdicts, "seconds": total,
              "stage_seconds": seconds, "config": config_lib.to_dict(cfg)}
    with open(os.path.join(cfg.workdir, "results.json"), "w") as f:
        json.dump(result, f, indent=1, default=str)
    if cfg.readme:
        default = get_config()
        command = "python -m experiments.miniature" + "".join(
            f" --config.{k}={','.join(map(str, getattr(cfg, k)))}" for k in ("seeds", "code_seeds", "parts")
            if getattr(cfg, k) != getattr(default, k))
        stamp = (f"Produced by `{command}` on {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPU cores, "
                 f"{compute / 60:.0f} min of training and evaluation; regenerated by that command with "
                 "`--config.readme=README.md`.\n\n")
        update_readme(cfg.readme, stamp + text.split("\n", 1)[1], cfg.workdir)
    print(f"wrote {os.path.join(cfg.workdir, 'report.md')} in {total / 60:.1f} min")
    return result


def _code_tables(code_runs: list[dict], workdir: str) -> list[str]:
    lines = code_section(code_runs[0], workdir, ablation=True) if len(code_runs) == 1 else []
    if len(code_runs) > 1:
        from rlhf_jax.miniature import paper

        rows = ["SFT", "PPO (baseline)", "+ adv. norm", "+ large batch", "PPO", "DPO-Iter"]
        paper_rows = {**{k: v[1:] for k, v in paper.TABLE3.items()}, **paper.TABLE7["CodeLlama-34B"]}
        lines = report.code_table(code_runs, rows, paper_rows, "Code: Table 3 rows, then SFT / PPO / DPO-Iter")
    return lines


if __name__ == "__main__":
    config_lib.run(get_config, main)
