"""PPO prompt and reward sources: the indexed prompt stream, programmatic rewards over decoded
responses (word count, APPS unit tests in the sandbox), registry errors."""

import os

import numpy as np
import pytest

from rlhf_jax.data import PipelineConfig, get_template
from rlhf_jax.sharding import make_mesh, put_batch
from rlhf_jax.training.ppo_config import PromptData, RewardConfig
from rlhf_jax.training.ppo_rewards import RewardContext, RewardInputs, build_reward_source
from rlhf_jax.training.ppo_rollout import prompt_stream, read_prompts
from rlhf_jax.training.sources import build_tokenizer

APPS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "code", "apps",
                    "train.jsonl")


@pytest.fixture(scope="module")
def tokenizer(toy_dir):
    return build_tokenizer(str(toy_dir / "tokenizer"))


def _inputs(tokenizer, mesh, texts, metas, *, width=96, cut=None):
    """RewardInputs whose responses are `texts`; `cut[i]` masks out the tail of row i from there."""
    ids = np.zeros((len(texts), width), np.int32)
    mask = np.zeros((len(texts), width), bool)
    for i, text in enumerate(texts):
        row = tokenizer.encode(text, add_special_tokens=False)
        ids[i, :len(row)] = row
        mask[i, :len(row) if cut is None else cut[i]] = True
    arrays = put_batch({"ids": ids, "mask": mask}, mesh)
    return RewardInputs(arrays["ids"], arrays["mask"], arrays["ids"], arrays["mask"], metas)


def test_prompt_stream_rows_point_at_their_prompts(toy_dir, tokenizer):
    records, metas = read_prompts(PromptData(format="alpaca", path=str(toy_dir / "alpaca.json")))
    assert len(records) == 48 and [m["index"] for m in metas] == list(range(48))
    pipe = PipelineConfig(batch_size=8, max_length=40, max_prompt_length=24, num_epochs=None)
    batch = next(iter(prompt_stream(records, tokenizer, get_template("safe_rlhf"), pipe)))
    assert batch["prompt_ids"].shape == (8, 24) and batch["prompt_mask"][:, -1].all()  # left-padded
    for ids, mask, index in zip(batch["prompt_ids"], batch["prompt_mask"], batch["example_index"]):
        text = tokenizer.decode(ids[mask.astype(bool)].tolist(), skip_special_tokens=True)
        assert records[index]["prompt_texts"][0] in text
    assert len(set(batch["example_index"].tolist())) == 8  # shuffled, no repeats within an epoch


def test_word_count_reward_reads_only_the_response_tokens(tokenizer):
    mesh = make_mesh()
    texts = ["the bee", "red", "ee e", "cat", "green tree", "e", "blue", "none here"]
    source = build_reward_source(RewardConfig(source="word_count", word="e"), RewardContext(mesh, tokenizer),
                                 key="reward")
    scores = source(_inputs(tokenizer, mesh, texts, [{}] * 8))
    np.testing.assert_array_equal(np.asarray(scores), [t.count("e") for t in texts])
    # tokens after the response mask ends are not part of the response
    cut = [len(tokenizer.encode(t, add_special_tokens=False)) for t in texts]
    cut[0] = len(tokenizer.encode("the", add_special_tokens=False))
    scores = source(_inputs(tokenizer, mesh, texts, [{}] * 8, cut=cut))
    assert float(scores[0]) == 1.0 and float(scores[2]) == 3.0


def test_apps_unit_test_reward_runs_the_programs(tokenizer):
    mesh = make_mesh()
    _, metas = read_prompts(PromptData(format="apps", path=APPS))
    assert [m["problem_id"] for m in metas] == ["0", "1", "2"]  # problems with tests only
    add = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"
    texts = [add, "print(0)", add, "print(1)", "x = 1", add, "pass", "print(3)"]
    rows = [metas[0], metas[0], metas[2], metas[1], metas[0], metas[0], metas[2], metas[0]]
    source = build_reward_source(RewardConfig(source="apps_unit_tests", path=APPS, timeout_s=4.0),
                                 RewardContext(mesh, tokenizer), key="reward")
    scores = source(_inputs(tokenizer, mesh, texts, rows))
    np.testing.assert_array_equal(np.asarray(scores), [10, 0, 0, 0, 0, 10, 0, 0])
    with pytest.raises(ValueError, match=r"reward.path: no problem with tests has problem_id '3'"):
        source(_inputs(tokenizer, mesh, texts, [{"problem_id": "3"}] * 8))


def test_code_contests_prompts_and_unit_test_reward(tokenizer):
    """CodeContests problems feed PPO (prompts + 10/0 reward over every test) and iterative DPO."""
    from rlhf_jax.training.iterative_labels import PROMPT_SOURCES as ITERATIVE_PROMPTS

    mesh = make_mesh()
    path = os.path.join(os.path.dirname(APPS), "..", "code_contests", "test.jsonl")
    records, metas = read_prompts(PromptData(format="code_contests", path=path))
    assert [m["problem_id"] for m in metas] == ["2A. Echo"] and "QUESTION:" in records[0]["prompt_texts"][0]
    source = build_reward_source(RewardConfig(source="code_contests_unit_tests", path=path, timeout_s=4.0),
                                 RewardContext(mesh, tokenizer), key="reward")
    texts = ["print(input())", "print(0)"] * 4
    np.testing.assert_array_equal(np.asarray(source(_inputs(tokenizer, mesh, texts, metas * 8))), [10, 0] * 4)
    items = ITERATIVE_PROMPTS["code_contests"](path, "apps")
    assert len(items) == 1 and items[0].problem.problem_id == "2A. Echo" and items[0].reference == "print(input())\n"
    with pytest.raises(FileNotFoundError, match=r"reward.path='nowhere' does not exist \(CodeContests problems"):
        build_reward_source(RewardConfig(source="code_contests_unit_tests", path="nowhere"),
                            RewardContext(mesh, tokenizer), key="reward")


def test_unknown_reward_source_is_named(tokenizer):
    with pytest.raises(ValueError, match=r"cost.source='rm'; choose from \['apps_unit_tests', 'code_contests_unit_tests', "
                                         r"'model', 'word_count'\]"):
        build_reward_source(RewardConfig(source="rm"), RewardContext(make_mesh(), tokenizer), key="cost")
