"""experiments.iterative_dpo on a tiny model: two rounds labelled by a tiny reward model, whose second
reference is the policy at the end of round one; a resume inside a round (bitwise); the
programmatic and unit-test labelers with their pair rules; config errors."""

import math
import os
import shutil

import jax
import numpy as np
import pytest

from experiments import iterative_dpo
from rlhf_jax.checkpoint import Checkpointer
from rlhf_jax.config import apply_overrides
from rlhf_jax.data import PipelineConfig, get_template
from rlhf_jax.data.schema import user_prompt
from rlhf_jax.models import load_pretrained, save_pretrained
from rlhf_jax.rewards import CodeProblem, TestCase
from rlhf_jax.sharding import make_mesh, put_batch
from rlhf_jax.training.dpo_reference import ReferenceTable, records_fingerprint
from rlhf_jax.training.iterative_labels import LABELERS, PAIR_RULES, LabelContext, LabelerConfig, PromptItem
from rlhf_jax.training.iterative_rounds import read_round_records, round_prompts
from rlhf_jax.training.loop import read_metrics
from rlhf_jax.training.preference_data import one_pass
from rlhf_jax.training.preference_steps import reference_logps
from rlhf_jax.training.sources import ModelSource, build_model, build_tokenizer
from rlhf_jax.training.state import split_model


def _flags(toy_dir, workdir, **extra):
    # 2 rounds x 2 steps; each round samples 4 responses of <= 8 tokens for 8 prompts (32 rows).
    flags = {
        "tokenizer_path": toy_dir / "tokenizer", "prompts.format": "preference_jsonl",
        "prompts.path": toy_dir / "prefs_train.jsonl", "prompts.max_length": 32, "prompts.max_prompt_length": 24,
        "rounds": 2, "steps_per_round": 2, "batch_size": 8, "sampling.samples_per_prompt": 4,
        "sampling.prompts_per_round": 8, "sampling.max_new_tokens": 8, "sampling.batch_size": 32,
        "labeler.name": "reference_similarity", "loop.checkpoint_every": 1, "loop.keep_checkpoints": 5,
        "loop.progress": "false", "optim.lr": 1e-2, "optim.warmup_steps": 0, "workdir": workdir, **extra}
    return {k: str(v) for k, v in flags.items()}


def _run(flags):
    return iterative_dpo.main(apply_overrides(iterative_dpo.get_config(), list(flags.items())))


def _train(workdir):
    return [r for r in read_metrics(str(workdir)) if "train/loss" in r]


def test_two_rounds_reset_the_reference_and_resume_exactly(toy_dir, tmp_path):
    # labels from a random tiny reward model: an HF LlamaForSequenceClassification folder made
    # from a causal LM with a fresh score head
    tokenizer = build_tokenizer(str(toy_dir / "tokenizer"))
    mesh = make_mesh()
    save_pretrained(build_model(ModelSource(), mesh=mesh, vocab_size=len(tokenizer)), str(tmp_path / "lm"))
    save_pretrained(load_pretrained(str(tmp_path / "lm"), mesh=mesh, head="score", seed=5), str(tmp_path / "rm"))
    flags = _flags(toy_dir, tmp_path / "run", **{
        "labeler.name": "reward_model", "labeler.model.hf_path": tmp_path / "rm", "labeler.batch_size": 16,
        "labeler.max_length": 32, "labeler.max_prompt_length": 24, "export_rounds": "true"})
    out = _run(flags)
    train = _train(tmp_path / "run")
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    rounds = [r for r in read_metrics(str(tmp_path / "run")) if "round/round" in r]
    assert [(r["step"], r["round/round"]) for r in rounds] == [(1, 1.0), (3, 2.0)]
    for r in rounds:  # continuous scores: no ties; the best sample scores above the mean
        assert r["round/pairs"] == 8 and r["round/ties"] == 0
        assert r["round/mean_best_score"] > r["round/mean_score"]
    # each round starts with policy == reference: margin 0, loss log 2
    for r in (train[0], train[2]):
        assert r["train/loss"] == pytest.approx(math.log(2), abs=1e-5)
        assert abs(r["train/margin"]) < 1e-5
    assert train[1]["train/loss"] != pytest.approx(math.log(2), abs=1e-3)

    # round 2's reference log-probs are those of the policy checkpointed at the end of round 1
    graphdef, _ = split_model(build_model(ModelSource(), mesh=mesh, vocab_size=len(tokenizer)))
    with Checkpointer(str(tmp_path / "run" / "checkpoints")) as ckpt:
        end_of_round_1 = ckpt.restore(2, target=out["state"])[0].params
    records = read_round_records(str(tmp_path / "run" / "rounds" / "2"))
    table = ReferenceTable.load(str(tmp_path / "run" / "rounds" / "2" / "reference_logps.npz"),
                                records_fingerprint(records))
    pipe = PipelineConfig(batch_size=8, max_length=32, max_prompt_length=24)
    logps = jax.jit(lambda p, b: reference_logps(p, b, graphdef=graphdef))
    for batch in one_pass(records, tokenizer, get_template("safe_rlhf"), pipe):
        got = jax.device_get(logps(end_of_round_1, put_batch(batch, mesh)))
        real = batch["chosen_attention_mask"].any(-1)
        index = batch["example_index"][real]
        np.testing.assert_allclose(got["ref_chosen_logps"][real], table.chosen[index], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got["ref_rejected_logps"][real], table.rejected[index], rtol=1e-5, atol=1e-5)
    moved = [not np.array_equal(np.asarray(a), np.asarray(b))
             for a, b in zip(jax.tree.leaves(end_of_round_1), jax.tree.leaves(out["state"].params))]
    assert all(moved)
    # export_rounds: each round's final policy as a Hugging Face folder
    for r, params in ((1, end_of_round_1), (2, out["state"].params)):
        _, exported = split_model(load_pretrained(str(tmp_path / "run" / "rounds" / str(r) / "hf_model"), mesh=mesh))
        for a, b in zip(jax.tree.leaves(exported), jax.tree.leaves(params)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    # a run that lost its last checkpoint resumes inside round 2 (from step 3) on the stored pairs
    # and reference, without sampling again, and reproduces the uninterrupted run bitwise
    pairs = tmp_path / "run" / "rounds" / "2" / "pairs.jsonl"
    stored = (pairs.read_text(), os.stat(pairs).st_mtime_ns)
    shutil.copytree(tmp_path / "run", tmp_path / "resumed")
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "4")
    again = _run({**flags, "workdir": str(tmp_path / "resumed")})
    assert read_metrics(str(tmp_path / "resumed")) == read_metrics(str(tmp_path / "run"))
    copied = tmp_path / "resumed" / "rounds" / "2" / "pairs.jsonl"
    assert (copied.read_text(), os.stat(copied).st_mtime_ns) == stored  # copytree keeps mtimes
    for a, b in zip(jax.tree.leaves(again["state"].params), jax.tree.leaves(out["state"].params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_round_prompts_walk_through_the_prompt_set():
    items = [PromptItem(user_prompt(f"prompt {i}")) for i in range(10)]
    rounds = [round_prompts(items, r, 4, seed=3) for r in range(1, 6)]  # 20 positions: two passes
    first_pass, second_pass = sum(rounds, [])[:10], sum(rounds, [])[10:]
    assert sorted(first_pass, key=str) == sorted(items, key=str) == sorted(second_pass, key=str)
    assert first_pass != second_pass  # reshuffled each pass
    assert round_prompts(items, 2, 4, seed=3) == rounds[1]  # a function of the round only
    assert round_prompts(items, 1, 0, seed=3) == first_pass  # 0: every prompt each round


def test_reference_similarity_labels_and_best_vs_worst_ties():
    items = [PromptItem(user_prompt("Name the red cat."), "The cat is red."),
             PromptItem(user_prompt("Name the blue dog."), "The dog is blue.")]
    responses = [["The cat is red.", "The dog is red.", "zzz"], ["no", "no", "no"]]
    labels = LABELERS["reference_similarity"](LabelerConfig(), LabelContext(None, None, None))(items, responses)
    assert labels.scores.shape == (2, 3) and labels.scores[0, 0] == 1.0
    assert labels.scores[0, 0] > labels.scores[0, 1] > labels.scores[0, 2]
    pairs, counts = PAIR_RULES["best_vs_worst"](items, responses, labels, "apps")
    assert counts == {"prompts": 2, "pairs": 1, "ties": 1}
    assert (pairs[0].chosen, pairs[0].rejected) == ("The cat is red.", "zzz")


def test_unit_test_labels_and_apps_pairs():
    problem = CodeProblem("p1", "apps", "Print the double of n.", "introductory",
                          private_tests=(TestCase("2\n", "4\n"), TestCase("5\n", "10\n")),
                          solutions=("print(2 * int(input()))",))
    item = PromptItem(user_prompt(problem.question), problem.solutions[0], problem)
    responses = [["print(int(input()) * 2)", "print(int(input()) + 2)", "print(4)"],  # pass, fail, fail
                 ["print(3)", "print(int(input()) ** 2)"] + ["print(1)"]]  # none passes
    labeler = LABELERS["unit_tests"](LabelerConfig(timeout_s=5.0, max_workers=2), LabelContext(None, None, None))
    labels = labeler([item, item], responses)
    np.testing.assert_array_equal(labels.scores, [[10, 0, 0], [0, 0, 0]])
    pairs, counts = PAIR_RULES["apps_tests"]([item, item], responses, labels, "apps")
    assert counts["sample_winner"] == 1 and counts["dataset_winner"] == 1 and counts["pairs"] == 5
    assert [p.chosen for p in pairs[:2]] == [responses[0][0]] * 2
    assert {p.chosen for p in pairs[2:]} == {problem.solutions[0]}
    _, counts = PAIR_RULES["best_vs_worst"]([item, item], responses, labels, "apps")
    assert counts == {"prompts": 2, "pairs": 1, "ties": 1}


def test_bad_config_is_rejected_before_training(toy_dir, tmp_path):
    with pytest.raises(ValueError, match="pair_rule='apps_tests' needs labeler.name='unit_tests'"):
        _run(_flags(toy_dir, tmp_path, pair_rule="apps_tests"))
    with pytest.raises(ValueError, match=r"labeler.name='oracle'; choose from"):
        _run(_flags(toy_dir, tmp_path, **{"labeler.name": "oracle"}))
    with pytest.raises(ValueError, match=r"loop.steps=10: the run has rounds \* steps_per_round = 4 steps"):
        _run(_flags(toy_dir, tmp_path, **{"loop.steps": 10}))
    with pytest.raises(ValueError, match=r"sampling.batch_size=30 is not a multiple of sampling.samples_per_prompt=4"):
        _run(_flags(toy_dir, tmp_path, **{"sampling.batch_size": 30}))
