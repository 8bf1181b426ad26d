"""The theory experiment: where DPO and PPO put probability the preference data never mentions.

    python -m experiments.toy_ood
    python -m experiments.toy_ood --config.synthetic.covered=4 --config.synthetic.seed=1 \
        --config.workdir=runs/toy_ood_cover4

Xu et al. 2024, Sec. 4. Two parts, seconds on a CPU, every number printed:
1. Table 1 (`rlhf_jax.miniature.toy_ood`): one prompt, reference (0.5, 0.5, 0), one pair y1 > y2.
   DPO's loss is exactly 0 at (0.1, 0, 0.9), as at (1, 0, 0); the KL-regularized reward objective
   (PPO's) is -inf there and its closed-form optimum pi_ref exp(r / beta) / Z gives y3 exactly 0.
   Gradient descent on DPO leaves y3's logit exactly where it starts (its gradient is 0).
2. Section 4.2 (`rlhf_jax.miniature.toy_synthetic`): 8 prompts x 8 responses, MLPs over one-hot
   prompts, pairs covering 3 responses per prompt. Reference, DPO, reward model and PPO heat maps
   (PNG) and their out-of-distribution (OOD) probabilities.
Writes `summary.md`, `results.json` and the heat maps to `workdir`; returns the numbers.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time

import numpy as np

from rlhf_jax import config as config_lib
from rlhf_jax.miniature.toy_ood import Table1Config, run_table1
from rlhf_jax.miniature.toy_synthetic import SyntheticConfig, run_synthetic

METHODS = {"reference": "reference", "dpo": "DPO", "reward_model": "reward model (softmax of r)", "ppo": "PPO"}


@dataclasses.dataclass(frozen=True)
class ToyOODConfig:
    table1: Table1Config = Table1Config()
    synthetic: SyntheticConfig = SyntheticConfig()
    workdir: str = "runs/toy_ood"


def get_config(preset_name: str | None = None) -> ToyOODConfig:
    if preset_name is not None:
        raise ValueError(f"experiments.toy_ood has no preset {preset_name!r}; set fields with --config.*")
    return ToyOODConfig()


def _vec(p) -> str:
    return "(" + ", ".join(f"{x:.3g}" if 0 < abs(x) < 1e-3 else f"{x:.3f}" for x in p) + ")"


def table1_lines(t1: dict) -> list[str]:
    """The Table 1 report as Markdown lines (also printed)."""
    beta = t1["beta"]
    lines = [f"## Table 1: one prompt, reference (0.5, 0.5, 0), one pair y1 > y2, beta = {beta}", "",
             "| policy | pi = (y1, y2, y3) | DPO loss | E_pi[r] - beta KL(pi, pi_ref) |", "|---|---|---|---|"]
    for name, row in t1["policies"].items():
        lines.append(f"| {name} | {_vec(row['policy'])} | {row['dpo_loss']:.6g} | {row['kl_objective']:.6g} |")
    r = t1["reward"]
    lines += ["", f"Reward learned from the pair (Bradley-Terry, `reward_loss`): r = {_vec(r)}; r(y3) never "
              "moves (no data). The KL-regularized optimum pi_ref exp(r / beta) / Z is "
              f"{_vec(t1['policies']['kl_optimum']['policy'])}: y3 gets exactly "
              f"{t1['policies']['kl_optimum']['policy'][2]} because pi_ref(y3) = 0.", "",
              "DPO loss along (0.1, eps, 0.9 - eps), `dpo_loss` vs the closed form log(1 + (eps / 0.1)^beta):", "",
              "| eps | dpo_loss | closed form |", "|---|---|---|"]
    lines += [f"| {p['eps']:g} | {p['dpo_loss']:.7g} | {p['closed_form']:.7g} |" for p in t1["dpo_path"]]
    lines += ["", "DPO by gradient descent on softmax logits, from starts with mass m on y3:", "",
              "| start | after DPO | DPO loss | d loss / d z3 | z3 unchanged |", "|---|---|---|---|---|"]
    lines += [f"| {_vec(run['start'])} | {_vec(run['final'])} | {run['loss_start']:.4f} -> {run['loss_final']:.4f} "
              f"| {run['y3_logit_grad']} | {run['y3_logit_unchanged']} |" for run in t1["dpo_runs"]]
    lines += ["", "DPO's loss never involves y3, so its logit keeps its start value; y3's share falls only because "
              "y1's logit keeps growing. From the reference itself (m = 0) y3 stays at 0; the loss is as happy "
              "with (0.1, 0, 0.9) as with (1, 0, 0). The KL-regularized objective is -inf at (0.1, 0, 0.9).", ""]
    return lines


def synthetic_lines(syn: dict, cfg: SyntheticConfig) -> list[str]:
    """The Section 4.2 report as Markdown lines (also printed)."""
    n, n_ood = cfg.num_prompts, int((~syn["covered"]).sum())
    lines = [f"## Section 4.2: {n} prompts x {n} responses, {cfg.covered} covered per prompt "
             f"({len(syn['pairs'])} pairs), beta = {cfg.beta}", "",
             "Covered responses C_i: " + "; ".join(
                 f"{i}: {np.flatnonzero(syn['covered'][i]).tolist()}" for i in range(n)) + ".", "",
             f"| method | OOD mass / prompt | mean OOD | max OOD | OOD cells above reference (of {n_ood}) "
             "| largest OOD rise | P(best response) |", "|---|---|---|---|---|---|---|"]
    for key, label in METHODS.items():
        s, rise = syn["ood"][key], syn["ood"][key]["largest_rise"]
        raised, moved = "-", "-"
        if key != "reference":
            raised = str(s["raised_above_reference"])
            moved = (f"prompt {rise['prompt']} response {rise['response']}: "
                     f"{rise['reference']:.3f} -> {rise['method']:.3f}")
        lines.append(f"| {label} | {s['ood_mass']:.3f} | {s['mean_ood']:.3f} | {s['max_ood']:.3f} | {raised} "
                     f"| {moved} | {s['best_response']:.3f} |")
    lines += ["", f"The reward model rates {syn['reward_ood_above_best']} OOD responses above the best response of "
              f"their prompt. PPO's objective E[r] - beta KL is {syn['ppo_objective_gap']:.2g} below that of its "
              f"closed-form optimum pi_ref exp(r / beta) / Z (largest probability difference "
              f"{syn['ppo_max_gap_to_closed_form']:.2g}).", "",
              "Closed-form PPO optimum on the same reward model for other KL coefficients:", "",
              "| KL coefficient | OOD mass / prompt | max OOD | P(best response) |", "|---|---|---|---|"]
    lines += [f"| {b:g} | {s['ood_mass']:.3f} | {s['max_ood']:.3f} | {s['best_response']:.3f} |"
              for b, s in syn["kl_sweep"].items()]
    lines += ["", "How to read it: DPO's loss only involves ratios between responses inside C_i, so nothing in it "
              "holds the OOD cells; they move with whatever the shared MLP weights do for other prompts. The "
              "reward model is equally unconstrained there, and PPO optimizes that reward, held to the "
              "reference only by beta KL: it avoids an OOD response only if the reward model does not rate it "
              "much higher, or the reference gives it very little mass (Table 1's exact protection needs "
              "pi_ref = 0). The paper reports DPO raising one OOD probability from 0.11 to 0.23 and PPO "
              "keeping them low; compare the rows above.", "",
              "Losses (first -> last step): " + "; ".join(
        f"{k} {v[0]:.4g} -> {v[1]:.4g}" for k, v in syn["losses"].items()) + ".", ""]
    return lines


def save_heatmaps(syn: dict, workdir: str) -> list[str]:
    """One PNG per method and one with all four; covered cells outlined. Returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    def draw(ax, key):
        probs = syn["probs"][key]
        ax.imshow(probs, vmin=0.0, vmax=1.0, cmap="viridis")
        for i, j in np.ndindex(probs.shape):
            ax.text(j, i, f"{probs[i, j]:.2f}", ha="center", va="center", fontsize=6,
                    color="black" if probs[i, j] > 0.6 else "white")
            if syn["covered"][i, j]:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=1.2))
        ax.set_title(METHODS[key], fontsize=9)
        ax.set_xlabel("response")
        ax.set_ylabel("prompt")

    paths = []
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.4))
    for ax, key in zip(axes, METHODS):
        draw(ax, key)
    fig.suptitle("Probabilities (red boxes: responses covered by preference pairs; the rest are OOD)")
    fig.tight_layout()
    paths.append(os.path.join(workdir, "heatmaps.png"))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    for key in METHODS:
        fig, ax = plt.subplots(figsize=(4.4, 4.4))
        draw(ax, key)
        fig.tight_layout()
        paths.append(os.path.join(workdir, f"heatmap_{key}.png"))
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


def _json_ready(x):
    if isinstance(x, dict):
        return {str(k): _json_ready(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_ready(v) for v in x]
    if isinstance(x, np.ndarray):
        return _json_ready(x.tolist())
    if isinstance(x, (float, np.floating)) and not math.isfinite(x):
        return str(float(x))  # JSON has no inf
    if isinstance(x, np.generic):
        return x.item()
    return x


def main(cfg: ToyOODConfig) -> dict:
    t0 = time.time()
    os.makedirs(cfg.workdir, exist_ok=True)
    t1 = run_table1(cfg.table1)
    syn = run_synthetic(cfg.synthetic)
    lines = ["# The theory experiment (Xu et al. 2024, Sec. 4)", ""] + table1_lines(t1) + synthetic_lines(
        syn, cfg.synthetic)
    figures = save_heatmaps(syn, cfg.workdir)
    lines += ["Heat maps: " + ", ".join(f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in figures[:1])
              + " (one file per method too).", ""]
    text = "\n".join(lines)
    print(text)
    summary = os.path.join(cfg.workdir, "summary.md")
    with open(summary, "w") as f:
        f.write(text)
    result = {"table1": t1, "synthetic": syn, "files": [summary, *figures],
              "config": config_lib.to_dict(cfg), "seconds": time.time() - t0}
    with open(os.path.join(cfg.workdir, "results.json"), "w") as f:
        json.dump(_json_ready(result), f, indent=1)
    print(f"wrote {summary}, results.json and {len(figures)} heat maps in {result['seconds']:.1f} s")
    return result


if __name__ == "__main__":
    config_lib.run(get_config, main)
