"""The theory experiment (experiments/toy_ood.py): Table 1 numbers exactly, Section 4.2 consistency.

One run of the experiment through its command-line entry point serves every test of its output.
Table 1 golden values, derived by hand (pi = (a, b, c), reference (0.5, 0.5, 0), one pair y1 > y2):
  DPO loss = log(1 + ((b / 0.5) / (a / 0.5))^beta) = log(1 + (b / a)^beta):
    at the reference: log 2; at (1, 0, 0) and (0.1, 0, 0.9): log(1 + 0) = 0 exactly.
  KL objective J(pi) = sum pi r - beta sum pi log(pi / pi_ref):
    J(reference) = 0.5 (r1 + r2) = 0 (the tabular BT reward from 0 is antisymmetric, r3 = 0);
    J((1, 0, 0)) = r1 - beta log 2; J((0.1, 0, 0.9)) = -inf (mass where pi_ref = 0).
  Its optimum pi_ref exp(r / beta) / Z = (sigmoid((r1 - r2) / beta), sigmoid((r2 - r1) / beta), 0).
"""

import json
import math

import numpy as np
import pytest

from experiments import toy_ood as experiment
from rlhf_jax import config as config_lib
from rlhf_jax.miniature import toy_synthetic
from rlhf_jax.miniature.toy_ood import (
    Table1Config,
    kl_regularized_objective,
    kl_regularized_optimum,
    table1_dpo_loss,
)
from rlhf_jax.miniature.toy_synthetic import SyntheticConfig, gold_reward, synthetic_data


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("toy_ood")
    result = config_lib.run(experiment.get_config, experiment.main, argv=[f"--config.workdir={workdir}"])
    return result, workdir


def test_table1_dpo_losses_are_exact(run):
    t1 = run[0]["table1"]
    beta = t1["beta"]
    assert beta == 0.1
    policies = t1["policies"]
    assert policies["reference"]["dpo_loss"] == pytest.approx(math.log(2.0), rel=1e-7)
    assert policies["ppo_optimum"]["dpo_loss"] == 0.0
    assert policies["dpo_counterexample"]["dpo_loss"] == 0.0  # 90% on y3 is DPO-optimal
    for point in t1["dpo_path"]:  # (0.1, eps, 0.9 - eps) -> the infimum 0
        assert point["dpo_loss"] == pytest.approx(math.log1p((point["eps"] / 0.1) ** beta), rel=1e-6)
    losses = [p["dpo_loss"] for p in t1["dpo_path"]]
    assert losses == sorted(losses, reverse=True) and losses[-1] < 0.05


def test_table1_reward_and_kl_optimum_are_exact(run):
    t1 = run[0]["table1"]
    beta, (r1, r2, r3) = t1["beta"], t1["reward"]
    assert r3 == 0.0 and r1 == -r2 and r1 > 0  # no data on y3; the BT gradient is antisymmetric
    policies = t1["policies"]
    assert policies["reference"]["kl_objective"] == 0.0
    assert policies["ppo_optimum"]["kl_objective"] == pytest.approx(r1 - beta * math.log(2.0), rel=1e-12)
    assert policies["dpo_counterexample"]["kl_objective"] == -math.inf
    optimum = policies["kl_optimum"]["policy"]
    assert optimum[2] == 0.0  # exactly: pi_ref(y3) = 0
    sigmoid = 1.0 / (1.0 + math.exp(-(r1 - r2) / beta))
    assert optimum[0] == pytest.approx(sigmoid, rel=1e-12)
    assert optimum[1] == pytest.approx(math.exp(-(r1 - r2) / beta) * sigmoid, rel=1e-9)
    assert policies["kl_optimum"]["kl_objective"] >= policies["ppo_optimum"]["kl_objective"]


def test_table1_dpo_never_moves_the_y3_logit(run):
    runs = run[0]["table1"]["dpo_runs"]
    assert [r["y3_start"] for r in runs] == list(Table1Config().y3_starts)
    for r in runs:
        assert r["y3_logit_grad"] == 0.0 and r["y3_logit_unchanged"]
        a, b, c = r["final"]
        assert r["loss_final"] < r["loss_start"] == pytest.approx(math.log(2.0), rel=1e-6)
        assert r["loss_final"] == pytest.approx(math.log1p((b / a) ** 0.1), rel=1e-4)
        if r["y3_start"] == 0.0:
            assert c == 0.0  # from the reference, DPO keeps y3 at exactly 0
        else:
            assert 0.0 < c < r["y3_start"]  # kept its logit; its share fell as y1's logit grew


def test_closed_forms_and_their_errors():
    assert table1_dpo_loss((0.3, 0.2, 0.5), beta=0.5) == pytest.approx(math.log1p((0.2 / 0.3) ** 0.5), rel=1e-6)
    ref = (0.25, 0.75, 0.0)
    pi = kl_regularized_optimum((1.0, 0.0, 50.0), beta=0.5, reference=ref)
    np.testing.assert_allclose(pi, [0.25 * math.e ** 2, 0.75, 0.0] / np.float64(0.25 * math.e ** 2 + 0.75))
    assert kl_regularized_objective(pi, (1.0, 0.0, 50.0), beta=0.5, reference=ref) == pytest.approx(
        0.5 * math.log(0.25 * math.e ** 2 + 0.75))  # the optimum's value is beta log Z
    with pytest.raises(ValueError, match="policy"):
        table1_dpo_loss((0.5, 0.6, 0.0), beta=0.1)
    with pytest.raises(ValueError, match="beta"):
        kl_regularized_optimum((0.0, 0.0, 0.0), beta=0.0, reference=ref)
    with pytest.raises(ValueError, match="reward"):
        kl_regularized_objective((0.5, 0.5, 0.0), (1.0, 2.0), beta=0.1, reference=ref)


def test_synthetic_data_and_reference(run):
    syn, cfg = run[0]["synthetic"], SyntheticConfig()
    covered = syn["covered"]
    assert covered.shape == (8, 8) and (covered.sum(axis=1) == cfg.covered).all() and np.diag(covered).all()
    gold = gold_reward(8)
    assert np.argmax(gold, axis=1).tolist() == list(range(8))
    pairs = syn["pairs"]
    assert len(pairs) == 8 * math.comb(cfg.covered, 2)
    assert all(covered[i, w] and covered[i, l] and gold[i, w] > gold[i, l] for i, w, l in pairs)
    again, pairs_again = synthetic_data(8, cfg.covered, cfg.seed)
    assert np.array_equal(again, covered) and np.array_equal(np.stack(pairs_again, axis=1), pairs)
    assert not np.array_equal(synthetic_data(8, cfg.covered, cfg.seed + 1)[0], covered)
    np.testing.assert_allclose(syn["probs"]["reference"], syn["behaviour"], atol=1e-2)


def test_synthetic_methods_fit_the_pairs(run):
    syn = run[0]["synthetic"]
    ref, dpo, rewards = syn["logps"]["reference"], syn["logps"]["dpo"], syn["rewards"]
    for name, table in syn["probs"].items():
        np.testing.assert_allclose(table.sum(axis=1), 1.0, rtol=1e-5, err_msg=name)
    for name, table in syn["logps"].items():
        np.testing.assert_allclose(np.exp(table), syn["probs"][name], atol=1e-6, err_msg=name)
    for i, w, l in syn["pairs"]:
        assert rewards[i, w] > rewards[i, l]  # the reward model ranks every training pair
        margin = (dpo[i, w] - ref[i, w]) - (dpo[i, l] - ref[i, l])
        assert margin > 0  # DPO's implicit reward too
    assert -1e-6 < syn["ppo_objective_gap"] < 1e-3  # PPO reached the optimum pi_ref exp(r / beta) / Z
    assert syn["ppo_max_gap_to_closed_form"] < 1e-2
    np.testing.assert_allclose(syn["probs"]["ppo"], syn["ppo_closed_form"], atol=1e-2)


def test_synthetic_ood_statistics(run):
    syn = run[0]["synthetic"]
    ood = ~syn["covered"]
    ref = syn["probs"]["reference"]
    for name, table in syn["probs"].items():
        s = syn["ood"][name]
        assert s["mean_ood"] == pytest.approx(table[ood].mean())
        assert s["max_ood"] == pytest.approx(table[ood].max())
        assert s["ood_mass"] == pytest.approx(np.where(ood, table, 0).sum(axis=1).mean())
        assert s["raised_above_reference"] == int((table[ood] > ref[ood]).sum())
        rise = s["largest_rise"]
        assert ood[rise["prompt"], rise["response"]] and rise["method"] == pytest.approx(
            table[rise["prompt"], rise["response"]])
    assert syn["ood"]["reference"]["raised_above_reference"] == 0
    assert syn["reward_ood_above_best"] == int((ood & (syn["rewards"] > np.diag(syn["rewards"])[:, None])).sum())
    sweep = syn["kl_sweep"]
    assert list(sweep) == list(SyntheticConfig().kl_sweep)
    assert sweep[0.1]["ood_mass"] == pytest.approx(syn["ood"]["ppo"]["ood_mass"], abs=1e-2)


def test_files_written(run):
    result, workdir = run
    summary = (workdir / "summary.md").read_text()
    assert "## Table 1" in summary and "## Section 4.2" in summary and "heatmaps.png" in summary
    assert f"| {result['synthetic']['ood']['dpo']['ood_mass']:.3f} |" in summary
    names = ["heatmaps.png"] + [f"heatmap_{k}.png" for k in experiment.METHODS]
    for name in names:
        assert (workdir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((workdir / "results.json").read_text())
    assert saved["table1"]["policies"]["dpo_counterexample"]["kl_objective"] == "-inf"
    assert saved["synthetic"]["ood"]["dpo"] == result["synthetic"]["ood"]["dpo"]


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match=r"synthetic\.covered"):
        SyntheticConfig(covered=8)
    with pytest.raises(ValueError, match=r"synthetic\.ref_uniform_mix"):
        SyntheticConfig(ref_uniform_mix=1.5)
    with pytest.raises(ValueError, match=r"table1\.beta"):
        Table1Config(beta=0.0)
    with pytest.raises(ValueError, match=r"table1\.y3_starts"):
        Table1Config(y3_starts=(1.0,))
    with pytest.raises(ValueError, match=r"synthetic\.covered"):
        config_lib.load_config(experiment.get_config, ["--config.synthetic.covered=1"])
    with pytest.raises(config_lib.ConfigError, match="synthetic"):
        config_lib.load_config(experiment.get_config, ["--config.synthetic.nope=1"])
    with pytest.raises(ValueError, match="no preset"):
        experiment.get_config("big")
    cfg = config_lib.load_config(experiment.get_config, ["--config.synthetic.kl_sweep=0.5,2"])
    assert cfg.synthetic.kl_sweep == (0.5, 2.0)
    assert toy_synthetic.behaviour_distribution(np.eye(3, dtype=bool), 0.0).tolist() == np.eye(3).tolist()
