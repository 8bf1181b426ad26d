"""experiments.reward_model: a reward model from an SFT (causal LM) checkpoint learns the toy
preference (held-out accuracy above chance) and exports as LlamaForSequenceClassification; a cost
model trains on PKU-SafeRLHF safety labels; bad data and configs fail naming the key."""

import json
import random

import numpy as np
import pytest

from experiments import reward_model
from rlhf_jax.config import apply_overrides
from rlhf_jax.data import PreferencePair, write_preference_jsonl
from rlhf_jax.data.schema import user_prompt
from rlhf_jax.models import LlamaForScore, load_pretrained, save_pretrained
from rlhf_jax.sharding import make_mesh
from rlhf_jax.training.loop import read_metrics
from rlhf_jax.training.preference_data import SCORE_PAIR_SOURCES, pair_records
from rlhf_jax.training.sources import ModelSource, build_model, build_tokenizer
from tests.training.conftest import toy_examples


def _flags(toy_dir, workdir, steps, **extra):
    flags = {
        "tokenizer_path": toy_dir / "tokenizer", "data.format": "preference_jsonl",
        "data.path": toy_dir / "prefs_train.jsonl", "data.template": "safe_rlhf", "data.max_length": 32,
        "data.max_prompt_length": 24, "batch_size": 8, "loop.steps": steps, "loop.checkpoint_every": 100,
        "loop.progress": "false", "optim.lr": 2e-3, "optim.schedule": "constant", "optim.warmup_steps": 0,
        "optim.weight_decay": 0.0, "workdir": workdir, **extra}
    return {k: str(v) for k, v in flags.items()}


def _run(flags):
    return reward_model.main(apply_overrides(reward_model.get_config(), list(flags.items())))


def _safe_rlhf_file(path, n=24, seed=2):
    """PKU-SafeRLHF rows from the toy task: the right animal is safe, the wrong one safe one time in three."""
    rng = random.Random(seed)
    rows = []
    for i, (q, good, bad) in enumerate(toy_examples(n, seed)):
        good_id = rng.randint(0, 1)
        responses = [good, bad] if good_id == 0 else [bad, good]
        safe = [True, True]
        safe[1 - good_id] = i % 3 == 0
        rows.append({"prompt": q, "response_0": responses[0], "response_1": responses[1],
                     "is_response_0_safe": safe[0], "is_response_1_safe": safe[1],
                     "better_response_id": good_id, "safer_response_id": good_id})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def test_reward_model_from_sft_checkpoint_learns_and_exports(toy_dir, tmp_path):
    # The "SFT checkpoint": a causal LM folder; the score head is initialized fresh on top of it.
    tokenizer = build_tokenizer(str(toy_dir / "tokenizer"))
    sft = build_model(ModelSource(), mesh=make_mesh(), vocab_size=len(tokenizer))
    save_pretrained(sft, str(tmp_path / "sft"), tokenizer=tokenizer)
    # 128 held-out pairs of the toy task (16 would not tell 0.7 from chance)
    write_preference_jsonl(tmp_path / "held_out.jsonl", [
        PreferencePair(user_prompt(q), good, bad) for q, good, bad in toy_examples(128, seed=7)])
    out = _run(_flags(toy_dir, tmp_path / "rm", 30, batch_size=16, **{
        "optim.lr": 5e-3, "model.hf_path": tmp_path / "sft", "data.eval_path": tmp_path / "held_out.jsonl"}))
    records = read_metrics(str(tmp_path / "rm"))
    assert [r["step"] for r in records] == list(range(1, 31))
    assert records[0]["train/loss"] == pytest.approx(np.log(2), abs=0.05)  # a fresh head scores ~0
    # held-out accuracy well above chance: 0.5 +- 0.044 (one standard deviation) for 128 pairs
    assert out["eval"]["count"] == 128
    assert out["eval"]["accuracy"] >= 0.65 and out["eval"]["margin"] > 0.5, out["eval"]
    config = json.loads((tmp_path / "rm" / "hf_model" / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"] and len(config["id2label"]) == 1
    assert isinstance(load_pretrained(out["hf_model"]), LlamaForScore)


def test_safer_pairs_carry_both_safety_labels(tmp_path):
    rows = _safe_rlhf_file(tmp_path / "safe.jsonl")
    pairs = SCORE_PAIR_SOURCES["safe_rlhf_safer"](str(tmp_path / "safe.jsonl"))
    records = pair_records(pairs, safety=True)
    for row, pair, rec in zip(rows, pairs, records):
        safer = row["safer_response_id"]
        assert pair.chosen == row[f"response_{safer}"] and pair.rejected == row[f"response_{1 - safer}"]
        assert rec["chosen_is_safe"] == int(row[f"is_response_{safer}_safe"])
        assert rec["rejected_is_safe"] == int(row[f"is_response_{1 - safer}_safe"])
    assert {rec["rejected_is_safe"] for rec in records} == {0, 1}


def test_cost_model_pulse_on_safety_labels(toy_dir, tmp_path):
    _safe_rlhf_file(tmp_path / "safe.jsonl")
    out = _run(_flags(toy_dir, tmp_path / "cost", 4, kind="cost", **{
        "data.format": "safe_rlhf_safer", "data.path": tmp_path / "safe.jsonl"}))
    records = read_metrics(str(tmp_path / "cost"))
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    for r in records:
        assert all(np.isfinite(v) for v in r.values())
        assert 0.0 <= r["train/sign_accuracy"] <= 1.0
    # three softplus terms at zero cost: 3 log 2 at the start, then lower
    assert records[0]["train/loss"] == pytest.approx(3 * np.log(2), abs=0.15)
    assert records[-1]["train/loss"] < records[0]["train/loss"]
    assert isinstance(load_pretrained(out["hf_model"]), LlamaForScore)


def test_bad_data_and_config_name_the_key(toy_dir, tmp_path):
    with pytest.raises(ValueError, match=r"kind=cost needs one of \['safe_rlhf_safer', 'preference_jsonl'\]"):
        _run(_flags(toy_dir, tmp_path, 2, kind="cost", **{"data.format": "safe_rlhf"}))
    with pytest.raises(ValueError, match=r"prefs_train.jsonl:1: a cost model needs meta\['chosen_safe'\]"):
        _run(_flags(toy_dir, tmp_path, 2, kind="cost"))
    with pytest.raises(ValueError, match=r"data.format='prefs'; choose from"):
        _run(_flags(toy_dir, tmp_path, 2, **{"data.format": "prefs"}))
    with pytest.raises(ValueError, match="batch_size=8 is not divisible by micro_batches=3"):
        _run(_flags(toy_dir, tmp_path, 2, micro_batches=3))
