"""The quickstart and the miniature end to end at a tiny size (pulse runs), and their report pieces."""

import dataclasses
import json
import math
import os

import pytest

from experiments import miniature, quickstart
from rlhf_jax.miniature import claims, report, stages
from rlhf_jax.miniature.code_pipeline import CodeScale
from rlhf_jax.miniature.evaluate import score_safety
from rlhf_jax.miniature.safety_pipeline import SafetyScale

TINY_MODEL = stages.ModelShape(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64)
TINY_BUNDLE = quickstart.BundleSize(safety_train=40, safety_test=12, code_train=24, code_test=9)
# batches are multiples of 8: the stages run data-parallel over tests/conftest.py's 8 CPU devices
TINY_CODE = CodeScale(model=TINY_MODEL, sft_steps=2, sft_batch=8, ppo_iterations=1, ppo_small_batch=16,
                      ppo_large_batch=16, ppo_mini_batches=2, ppo_epochs=1, dpo_rounds=1, dpo_prompts_per_round=4,
                      dpo_samples=2, dpo_steps_per_round=1, dpo_batch=8, eval_problems=6, eval_samples=2,
                      eval_ks=(1, 2), max_new_tokens=8)
TINY_SAFETY = SafetyScale(model=TINY_MODEL, sft_steps=2, sft_safe_steps=1, sft_batch=8, rm_steps=1, rm_batch=8,
                          dpo_steps=1, dpo_batch=8, iter_rounds=2, iter_prompts_per_round=4, iter_samples=2,
                          iter_steps_per_round=1, ppo_iterations=1, ppo_batch=16, ranking_steps=1, max_new_tokens=8)


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    """One miniature pulse (both halves, every table, README rewrite) shared by the tests below."""
    root = tmp_path_factory.mktemp("mini")
    readme = root / "README.md"
    readme.write_text(f"# x\n\n## Results\n{miniature.README_START}\nOLD-RESULTS\n{miniature.README_END}\n\n## Tail\n")
    cfg = dataclasses.replace(miniature.get_config(), code=TINY_CODE, safety=TINY_SAFETY, bundle=TINY_BUNDLE,
                              parts=("safety", "code"), progress=False, seeds=(0,), code_seeds=(0,),
                              readme=str(readme), workdir=str(root / "run"))
    return cfg, miniature.main(cfg), root


def test_miniature_pulse_runs_every_table(mini):
    cfg, out, root = mini
    safety = out["safety"][0]["eval"]
    expected = {"SFT(Alpaca)", "SFT(Safe)", "DPO", "DPO + SFT(Safe)", "+ filter dual-unsafe", "+ filter dual-safe",
                "DPO-Iter round 1", "DPO-Iter round 2", "PPO", "RRHF", "PRO"}
    assert set(safety) == expected
    for m in safety.values():
        assert 0.0 <= m["safety_rate"] <= 1.0 and math.isfinite(m["help"]) and math.isfinite(m["reward"])
    code = out["code"][0]["eval"]
    assert set(code) == {"SFT", "PPO (baseline)", "+ adv. norm", "+ large batch", "PPO", "DPO-Iter"}
    for m in code.values():
        assert set(m["sampled"]["all"]) == {"pass@1", "pass@2"} and m["problems"]["all"] == 6
        assert all(0.0 <= v <= 1.0 for v in m["greedy"].values())
    assert set(out["claims"]) == {"shift", "sft_safe", "filters", "rounds", "ppo_safety", "table4", "tricks",
                                  "ppo_code", "dpo_iter_code"}
    text = (root / "README.md").read_text()
    assert "OLD-RESULTS" not in text and "## Tail" in text and "| DPO-Iter round 2 |" in text
    assert "\n### Claims\n" in text
    for key in ("safety_rate", "help", "reward"):
        assert f"(docs/results/table2_{key}.png)" in text
        assert (root / "docs" / "results" / f"table2_{key}.png").exists()
    with pytest.raises(ValueError, match="parts"):
        miniature.main(dataclasses.replace(cfg, parts=("tables",)))


def test_quickstart_pulse_writes_the_report_and_refuses_stale_stages(mini):
    """The quickstart on the miniature's seed-0 folder and bundle: the same code stages (SFT, PPO,
    DPO-Iter, evaluations) with the same settings are reused, not trained again; other settings in the
    same folder are an error naming the stage and the setting."""
    _, out_mini, root = mini
    cfg = dataclasses.replace(quickstart.get_config(), code=TINY_CODE, bundle=TINY_BUNDLE, theory=False,
                              progress=False, workdir=str(root / "run" / "seed_0"),
                              bundle_dir=str(root / "run" / "bundle"))
    out = quickstart.main(cfg)
    assert out["stage_seconds"] == {}  # every stage reused
    wanted = ("SFT", "PPO", "DPO-Iter")
    assert out["code"]["eval"] == {k: v for k, v in out_mini["code"][0]["eval"].items() if k in wanted}
    assert set(out["claims"]) == {"ppo_code", "dpo_iter_code"}
    work = root / "run" / "seed_0"
    text = (work / "report.md").read_text()
    assert "| SFT |" in text and "| PPO |" in text and "| DPO-Iter |" in text and "38.6 / 10.1 / 3.9" in text
    for png in ("code_ppo_reward.png", "code_pass.png"):
        assert (work / "plots" / png).stat().st_size > 1000
    assert json.loads((work / "results.json").read_text())["claims"] == out["claims"]
    with pytest.raises(ValueError, match=r"stage 'code_sft' was run with other settings \(steps: 2 then, 3 now\)"):
        quickstart.main(dataclasses.replace(cfg, code=dataclasses.replace(TINY_CODE, sft_steps=3)))


def test_score_safety_uses_the_gold_evaluators():
    prompts = ["How do I make tea?", "Please help me steal a bike."]
    responses = ["Sure. First, boil some water. Then, add the tea leaves. Finally, wait three minutes.",
                 "Sure. First, find a bike with no lock."]
    m = score_safety(prompts, responses)
    assert m["help"] == pytest.approx(2.0) and m["harm"] == pytest.approx(0.0)  # costs -0.5 and 0.5
    assert m["safety_rate"] == 0.5 and m["reward"] == pytest.approx((3.0 - 1.5) / 2)
    assert m["types"] == {"helpful": 0.5, "partial": 0.5} and m["safety_rate_harmful"] == 0.0
    with pytest.raises(ValueError, match="1 responses"):
        score_safety(prompts, responses[:1])


def _safety_run(**rates):
    return {"eval": {k: {"safety_rate": v, "help": 1.0 if k == "PPO" else 0.0, "reward": 0.0} for k, v in rates.items()}}


def test_claims_are_checked_seed_by_seed():
    runs = [_safety_run(**{"DPO": 0.5, "DPO-Iter round 2": 0.9, "DPO-Iter round 1": 0.7, "PPO": 0.6,
                           "DPO + SFT(Safe)": 0.4, "+ filter dual-safe": 0.8}),
            _safety_run(**{"DPO": 0.5, "DPO-Iter round 2": 0.4, "DPO-Iter round 1": 0.7, "PPO": 0.6,
                           "DPO + SFT(Safe)": 0.6, "+ filter dual-safe": 0.5})]
    out = claims.safety_claims(runs, rounds=2)
    assert out["shift"][0] == [True, False] and out["rounds"][0] == [True, False]
    assert out["sft_safe"][0] == [False, True] and out["ppo_safety"][0] == [True, True]
    ok, line = report.claim_line("shift", *out["shift"])
    assert ok is False and "NOT reproduced** (held in 1/2 seeds)" in line and "65.0%" in line
    ok, line = report.claim_line("ppo_safety", *out["ppo_safety"])
    assert ok is True and line.startswith("- **reproduced** (held in 2/2 seeds)")
    assert report.claim_line("tricks", [], "")[0] is None
    assert report.cell([0.5, 0.7], "{:.1f}", 100) == "60.0 ± 14.1" and report.cell([0.25]) == "0.25"


def test_stages_skip_what_is_done(tmp_path):
    st = stages.Stages(str(tmp_path), log=lambda _: None)
    calls = []
    assert st.value_stage("v", lambda: calls.append(1) or {"x": 1}) == {"x": 1}
    assert st.value_stage("v", lambda: calls.append(1) or {"x": 2}) == {"x": 1} and calls == [1]

    def make(workdir, **settings):
        os.makedirs(os.path.join(workdir, "hf_model"))
        open(os.path.join(workdir, "hf_model", "config.json"), "w").close()
        calls.append(2)
    assert st.model_stage("m", make) == st.model_stage("m", make) == str(tmp_path / "m" / "hf_model")
    assert calls == [1, 2] and set(st.seconds) == {"v", "m"}
    again = stages.Stages(str(tmp_path), log=lambda _: None)  # a rerun reuses both, with their stored times
    again.value_stage("v", lambda: calls.append(3))
    again.model_stage("m", make)
    assert calls == [1, 2] and again.seconds == {} and again.all_seconds == pytest.approx(st.seconds, abs=1e-9)
    # settings are stored with a stage: the same ones reuse it, others are an error naming them
    assert st.model_stage("k", make, steps=1, progress=True) == again.model_stage("k", make, steps=1, progress=False)
    with pytest.raises(ValueError, match=r"stage 'k' was run with other settings \(steps: 1 then, 2 now\)"):
        again.model_stage("k", make, steps=2)
    with pytest.raises(ValueError, match=r"stage 'v' was run with other settings \(model: None then, 'x' now\)"):
        again.value_stage("v", lambda: {}, key={"model": "x"})
    assert calls == [1, 2, 2]


@pytest.mark.parametrize("key, value, match", [
    ("code.sft_steps", "0", r"code.sft_steps=0 must be >= 1"),
    ("code.ppo_lr", "-1e-4", r"code.ppo_lr=-0.0001 must be > 0"),
    ("code.model.num_layers", "0", r"code.model.num_layers=0 must be >= 1"),
    ("code.eval_ks", "1,9", r"code.eval_ks=\(1, 9\) needs code.eval_samples >= 9, got 5"),
    ("safety.iter_rounds", "0", r"safety.iter_rounds=0 must be >= 1"),
])
def test_bad_sizes_are_named_before_anything_runs(key, value, match):
    from rlhf_jax.config import apply_overrides

    with pytest.raises(ValueError, match=match):
        apply_overrides(miniature.get_config(), [(key, value)])
    assert apply_overrides(miniature.get_config(), [("code.eval_samples", "0")]).code.eval_samples == 0
