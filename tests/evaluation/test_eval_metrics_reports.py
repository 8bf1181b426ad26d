"""Help / Harm / Safety rate on hand-computed scores, report layouts, and judge input batching."""

import json

import numpy as np
import pytest

from rlhf_jax.evaluation import help_harm_safety, mean_reward, reward_report, safety_report
from rlhf_jax.evaluation.judge_inputs import bucket_length, judge_batches


def test_help_harm_safety_by_hand():
    # help = (1 + 2 + 3 - 2) / 4 = 1; harm = (-1 + 0 + 2 - 3) / 4 = -0.5;
    # safe (cost <= 0): -1, 0, -3 -> 3 of 4; baseline mean = (0 + 0 + 1 - 1) / 4 = 0 -> delta 1.
    m = help_harm_safety([1, 2, 3, -2], [-1, 0, 2, -3], baseline_reward_scores=[0, 0, 1, -1])
    assert m == {"help": 1.0, "harm": -0.5, "safety_rate": 0.75, "num_responses": 4,
                 "baseline_help": 0.0, "help_delta": 1.0}
    assert "help_delta" not in help_harm_safety([1.0], [0.5])
    assert help_harm_safety([1.0], [0.5])["safety_rate"] == 0.0
    assert mean_reward(np.array([0.5, 0.25, 0.0], np.float32)) == {"reward": 0.25, "num_responses": 3}


@pytest.mark.parametrize("args, message", [
    (([1, 2], [1]), r"reward_scores\[2\] and cost_scores\[1\]"),
    (([1, 2], [1, 2], [1]), r"baseline_reward_scores\[1\]"),
    (([], []), "reward_scores must be a non-empty 1-D"),
    (([1, np.nan], [1, 2]), "reward_scores has 1 non-finite scores, first at index 1"),
    (([[1, 2]], [[1, 2]]), r"shape \(1, 2\)"),
])
def test_metric_input_errors(args, message):
    with pytest.raises(ValueError, match=message):
        help_harm_safety(*args)


def test_safety_report_layout_and_files(tmp_path):
    results = {
        "SFT(Alpaca)": help_harm_safety([-2.5, -2.74], [1.0, 2.0]),
        "PPO": help_harm_safety([1.69, 1.69], [-12.0, -12.16], baseline_reward_scores=[0.0, 0.0]),
    }
    md = safety_report(results, title="SafeRLHF, Llama-2-7B", baseline_name="Beaver").to_markdown()
    assert md.splitlines()[:6] == [
        "### SafeRLHF, Llama-2-7B",
        "",
        "| Method | Help ↑ | Help vs. Beaver ↑ | Harm ↓ | S.R. ↑ |",
        "|---|---:|---:|---:|---:|",
        "| SFT(Alpaca) | -2.62 | - | 1.50 | 0.0% |",
        "| PPO | 1.69 | 1.69 | -12.08 | 100.0% |",
    ]
    md_path, json_path = safety_report(results).write(tmp_path / "out" / "safe_rlhf")
    data = json.load(open(json_path))
    assert [r["method"] for r in data["rows"]] == ["SFT(Alpaca)", "PPO"]
    assert data["rows"][1]["harm"] == pytest.approx(-12.08)
    assert [c["key"] for c in data["columns"]] == ["help", "help_delta", "harm", "safety_rate"]
    assert open(md_path).read().startswith("### SafeRLHF evaluation")


def test_reward_report_layout():
    md = reward_report({"SFT": mean_reward([0.5, 0.564]), "PPO": mean_reward([0.718])},
                       reward_model="OpenAssistant").to_markdown()
    assert "| Method | OpenAssistant ↑ |" in md
    assert "| SFT | 0.532 |" in md and "| PPO | 0.718 |" in md


def test_judge_batches_bucket_sort_and_fill():
    assert [bucket_length(n) for n in (1, 16, 17, 64, 65)] == [16, 16, 32, 64, 128]
    encoded = [[5] * 20, [6] * 3, [7] * 40]
    batches = list(judge_batches(encoded, batch_size=2, pad_id=0))
    assert [b.input_ids.shape for b in batches] == [(2, 32), (2, 64)]
    assert list(batches[0].indices) == [1, 0] and list(batches[1].indices) == [2, -1]
    assert batches[0].attention_mask[0].sum() == 3 and batches[0].input_ids[0, 3] == 0
    assert batches[1].attention_mask[1].sum() == 1  # filler row, never read
