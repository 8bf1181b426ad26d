"""The paper in five minutes: the theory experiment, then SFT -> PPO vs iterative DPO on code.

    python -m experiments.quickstart
    python -m experiments.quickstart --config.workdir=runs/quickstart_seed1 --config.seed=1

What it does, with real training on a laptop CPU (about 5 minutes on 2 cores):
1. The theory experiment (`experiments.toy_ood`): the paper's Table 1 counter-example, exactly, and
   the Section 4.2 synthetic study (heat maps of where DPO, a reward model and PPO put mass).
2. Generates the bundled tasks (an APPS-format code task, a PKU-SafeRLHF-format dialogue task) and
   trains their tokenizer: code, a fixed seed, nothing downloaded.
3. The code pipeline (`rlhf_jax.miniature.code_pipeline`) on a tiny LLaMA: SFT on the reference
   solutions, then from the SFT model PPO with the unit-test reward (10 if every test passes, programs
   run in the sandbox) and iterative DPO (programs labelled by the same tests, the paper's pairing
   rule), each evaluated on held-out test problems by pass@5 at temperature 1 (the paper's metric)
   and greedy pass@1.
4. Prints the results beside the paper's Tables 1 and 7 and the claims they bear on, and writes a
   report (`report.md`, PNG plots, `results.json`) to `workdir`.
Every stage is the experiment module a paper-scale run uses (Hugging Face folders between stages,
Orbax checkpoints, TensorBoard logs under `workdir/<stage>`); a stage already done in `workdir` is not
run again. The full miniature paper (Tables 2, 3, 4, 7, several seeds) is `experiments.miniature`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

from rlhf_jax import config as config_lib
from rlhf_jax.miniature import claims as claims_lib
from rlhf_jax.miniature import paper, report, stages
from rlhf_jax.miniature.code_pipeline import CodeScale, run_code


@dataclasses.dataclass(frozen=True)
class BundleSize:
    safety_train: int = 2000
    safety_test: int = 200
    code_train: int = 600
    code_test: int = 150


QUICK_CODE = CodeScale(sft_steps=230, ppo_iterations=10, ppo_small_batch=16, ppo_large_batch=32, ppo_epochs=2,
                       ppo_lr=1e-4, ppo_critic_lr=1e-4, dpo_rounds=2, dpo_prompts_per_round=24,
                       dpo_steps_per_round=15, dpo_lr=1e-4, eval_problems=60, eval_samples=5)


@dataclasses.dataclass(frozen=True)
class QuickstartConfig:
    code: CodeScale = QUICK_CODE
    bundle: BundleSize = BundleSize()
    theory: bool = True
    bundle_dir: str = ""  # "": workdir/bundle (generated there on the first run)
    seed: int = 0
    progress: bool = True
    workdir: str = "runs/quickstart"


def get_config(preset_name: str | None = None) -> QuickstartConfig:
    if preset_name is not None:
        raise ValueError(f"experiments.quickstart has no preset {preset_name!r}; set fields with --config.*")
    return QuickstartConfig()


def make_bundle(workdir: str, size: BundleSize, seed: int, root: str = "") -> dict:
    """The bundled tasks and tokenizer under `root` (default workdir/bundle), generated once (same
    seed, same files)."""
    from rlhf_jax.miniature import code_task, safety_task
    from rlhf_jax.miniature.tokenizer import build_bundle

    root = root or os.path.join(workdir, "bundle")
    if not os.path.exists(os.path.join(root, "tokenizer", "tokenizer.json")):
        return build_bundle(root, seed, safety_train=size.safety_train, safety_test=size.safety_test,
                            code_train=size.code_train, code_test=size.code_test)
    return {"safety": {"paths": safety_task.paths(os.path.join(root, "safety"))},
            "code": {"paths": code_task.paths(os.path.join(root, "code"))},
            "tokenizer": os.path.join(root, "tokenizer")}


def run_theory(workdir: str) -> dict:
    from experiments import toy_ood

    cfg = dataclasses.replace(toy_ood.get_config(), workdir=os.path.join(workdir, "theory"))
    return toy_ood.main(cfg)


def theory_lines(theory: dict, workdir: str) -> list[str]:
    ood = theory["synthetic"]["ood"]
    pol = theory["table1"]["policies"]
    lines = ["## Theory (Section 4)", "",
             "Table 1 (exact): reference (0.5, 0.5, 0), one pair y1 > y2, beta 0.1.", "",
             "| policy | pi(y1, y2, y3) | DPO loss | E[r] - beta KL |", "|---|---|---|---|"]
    for name in ("reference", "dpo_counterexample", "kl_optimum"):
        p = pol[name]
        lines.append(f"| {name} | ({', '.join(f'{x:.3g}' for x in p['policy'])}) | {p['dpo_loss']:.3g} | "
                     f"{p['kl_objective']} |")
    lines += ["", "Section 4.2 (8 prompts x 8 responses, 3 covered per prompt): out-of-distribution (OOD) "
              "probability mass per prompt and the largest OOD rise above the reference.", "",
              "| method | OOD mass | OOD cells raised | largest rise |", "|---|---|---|---|"]
    for name in ("reference", "dpo", "reward_model", "ppo"):
        o = ood[name]
        rise = o["largest_rise"]
        lines.append(f"| {name} | {o['ood_mass']:.3f} | {o['raised_above_reference']} | "
                     f"{rise['reference']:.3f} -> {rise['method']:.3f} |")
    heat = [f for f in theory["files"] if f.endswith("heatmaps.png")]
    if heat:
        lines += ["", f"![heat maps]({report.relpath(heat[0], workdir)})"]
    return lines + [""]


def code_section(code: dict, workdir: str, *, ablation: bool) -> list[str]:
    rows = ["SFT", *(("PPO (baseline)", "+ adv. norm", "+ large batch") if ablation else ()), "PPO", "DPO-Iter"]
    paper_rows = {**paper.TABLE7["CodeLlama-34B"], **{k: v[1:] for k, v in paper.TABLE3.items()}}
    paper_rows["PPO"] = paper.TABLE7["CodeLlama-34B"]["PPO"]
    lines = report.code_table([code], rows, paper_rows, "Code: SFT vs PPO vs DPO-Iter (paper: CodeLlama-34B, APPS)")
    if code["dpo_rounds"]:
        lines += ["DPO-Iter rounds, pass rate of the sampled training programs: " + ", ".join(
            f"round {r['round']} {r['sample_pass_rate']:.1%}" for r in code["dpo_rounds"]) + ".", ""]
    plots = os.path.join(workdir, "plots")
    os.makedirs(plots, exist_ok=True)
    curve = report.save_curves(os.path.join(plots, "code_ppo_reward.png"), "PPO on code: mean train reward",
                               code["ppo_curves"], "reward (10 = all tests pass)")
    name, metric = report.code_metric(code["eval"]["SFT"])
    bars = report.save_bar_plot(os.path.join(plots, "code_pass.png"), f"held-out {name}",
                                {row: {d: 100 * metric(code["eval"][row], d) for d in (*report.DIFFS, "all")}
                                 for row in rows if row in code["eval"]}, "%")
    return lines + [f"![PPO reward]({report.relpath(curve, workdir)}) ![pass rates]({report.relpath(bars, workdir)})", ""]


def main(cfg: QuickstartConfig) -> dict:
    t0 = time.time()
    os.makedirs(cfg.workdir, exist_ok=True)
    st = stages.Stages(cfg.workdir)
    theory = run_theory(cfg.workdir) if cfg.theory else None
    bundle = make_bundle(cfg.workdir, cfg.bundle, cfg.seed, cfg.bundle_dir)
    code = run_code(st, bundle, cfg.code, seed=cfg.seed, progress=cfg.progress)
    lines = [f"# Quickstart: the paper in miniature (seed {cfg.seed})", ""]
    checks = {}
    if theory is not None:
        lines += theory_lines(theory, cfg.workdir)
        checks["table1"] = claims_lib.table1(theory)
        checks["synthetic"] = claims_lib.synthetic(theory)
    lines += code_section(code, cfg.workdir, ablation=False)
    checks.update(claims_lib.code_claims([code], ablation=False))
    verdicts, claim_lines = report.claims_section(checks)
    lines += claim_lines
    seconds = time.time() - t0
    lines += ["", "Stage times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in st.seconds.items())
              + f"; total {seconds:.0f} s.", "",
              "The miniature is small on purpose: a tiny LLaMA, minutes of CPU, one seed. It shows the "
              "paper's mechanics, not its magnitudes; `python -m experiments.miniature` runs every table "
              "with several seeds."]
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    with open(os.path.join(cfg.workdir, "report.md"), "w") as f:
        f.write(text)
    result = {"code": code, "claims": verdicts, "seconds": seconds, "stage_seconds": st.seconds,
              "config": config_lib.to_dict(cfg)}
    with open(os.path.join(cfg.workdir, "results.json"), "w") as f:
        json.dump(result, f, indent=1, default=str)
    print(f"wrote {os.path.join(cfg.workdir, 'report.md')} in {seconds:.0f} s")
    return result


if __name__ == "__main__":
    config_lib.run(get_config, main)
