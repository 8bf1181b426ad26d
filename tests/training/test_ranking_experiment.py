"""PRO / RRHF: pulse runs that learn on held-out pairs, reward-model candidates with resume,
micro-batch accumulation == full batch, and config errors named before anything loads."""

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from experiments import ranking
from rlhf_jax.config import apply_overrides
from rlhf_jax.data import PipelineConfig, get_template, read_preference_jsonl
from rlhf_jax.data.batching import pad_id_of
from rlhf_jax.data.schema import user_prompt
from rlhf_jax.data.tokenize import encode_prompt, encode_response
from rlhf_jax.losses import masked_count, masked_sum
from rlhf_jax.models import LlamaForCausalLM, LlamaForScore, create_model, load_pretrained, preset, save_pretrained
from rlhf_jax.models import load_tokenizer
from rlhf_jax.training.logprobs import model_token_logps
from rlhf_jax.training.loop import read_metrics
from rlhf_jax.training.ranking_candidates import RewardModelConfig, RewardScorer
from rlhf_jax.training.ranking_data import RankingExample, encode_ranking, ranking_row, tokenize_ranking
from rlhf_jax.training.ranking_steps import PROConfig, RRHFConfig, make_ranking_loss, ranking_step
from rlhf_jax.training.selection import read_record
from rlhf_jax.training.state import init_train_state, split_model
from rlhf_jax.training.steps import jit_step


@pytest.fixture(scope="module")
def ranking_data(toy_dir, tmp_path_factory):
    """Pairs over every (color, animal) of the toy data, the chosen answer naming the prompt's
    animal. The 16 combinations with (color + animal) % 4 == 0 are held out, so the held-out
    margin can only rise if the policy learns to name the animal of the prompt."""
    prompts = [json.loads(line)["prompt"] for line in (toy_dir / "prefs_train.jsonl").read_text().splitlines()]
    words = [re.fullmatch(r"Name the (\w+) (\w+)\.", p).groups() for p in prompts]
    colors, animals = sorted({c for c, _ in words}), sorted({a for _, a in words})
    train, held_out = [], []
    for i, color in enumerate(colors):
        for j, animal in enumerate(animals):
            others = [a for a in animals if a != animal]
            rows = [{"prompt": f"Name the {color} {animal}.", "chosen": f"The {animal} is {color}.",
                     "rejected": f"The {other} is {color}."} for other in others]
            if (i + j) % 4:
                train += rows
            else:
                held_out += rows[(i + j) % 3::3][:2]
    order = np.random.default_rng(0).permutation(len(train))
    root = tmp_path_factory.mktemp("ranking")
    for name, rows in (("train.jsonl", [train[i] for i in order]), ("held_out.jsonl", held_out)):
        (root / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def _flags(toy_dir, data, workdir, steps, **extra):
    flags = {
        "tokenizer_path": toy_dir / "tokenizer", "data.format": "preference_jsonl",
        "data.path": data / "train.jsonl", "data.template": "safe_rlhf", "eval.format": "preference_jsonl",
        "eval.path": data / "held_out.jsonl", "data.max_length": 32, "data.max_prompt_length": 16,
        "batch_size": 8, "loop.steps": steps, "loop.checkpoint_every": 30, "loop.progress": "false",
        "optim.lr": 3e-3, "workdir": workdir, "model.preset": "tiny", **extra}
    return {k: str(v) for k, v in flags.items()}


def _config(flags):
    return apply_overrides(ranking.get_config(), list(flags.items()))


def _evals(workdir):
    return {r["step"]: r for r in read_metrics(str(workdir)) if "eval/margin" in r}


@pytest.mark.parametrize("algorithm", ["pro", "rrhf"])
def test_pulse_learns_held_out_ranking_and_keeps_the_best(algorithm, toy_dir, ranking_data, tmp_path):
    flags = _flags(toy_dir, ranking_data, tmp_path, 60, algorithm=algorithm,
                   **{"loop.eval_every": 20, "selection.metric": "margin"})
    out = ranking.main(_config(flags))
    train = [r for r in read_metrics(str(tmp_path)) if "train/loss" in r]
    assert [r["step"] for r in train] == list(range(1, 61))
    evals = _evals(tmp_path)
    assert sorted(evals) == [0, 20, 40, 60]
    margins = {s: r["eval/margin"] for s, r in evals.items()}
    assert margins[60] > margins[0] + 0.05, margins  # chosen minus rejected, length-normalized
    assert evals[60]["eval/pair_accuracy"] > evals[0]["eval/pair_accuracy"]
    best_step = max(margins, key=lambda s: (margins[s], -s))
    assert out["best"] == (best_step, pytest.approx(margins[best_step]))
    assert read_record(out["best_dir"]) == {"metric": "margin", "mode": "max", "step": best_step,
                                            "value": pytest.approx(margins[best_step])}
    best = load_pretrained(out["best_dir"])
    if best_step == 60:  # the final state is the best one
        for a, b in zip(jax.tree.leaves(split_model(best)[1]), jax.tree.leaves(out["state"].params)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert load_pretrained(out["hf_model"]).cfg.vocab_size == best.cfg.vocab_size


def test_sampled_candidates_ranked_by_reward_model_survive_resume(toy_dir, ranking_data, tmp_path, capsys):
    tokenizer = load_tokenizer(str(toy_dir / "tokenizer"))
    reward_dir = str(tmp_path / "rm")
    save_pretrained(create_model(LlamaForScore, preset("tiny", vocab_size=len(tokenizer)), seed=3), reward_dir,
                    tokenizer=tokenizer)
    flags = _flags(toy_dir, ranking_data, tmp_path / "run", 2, algorithm="pro", **{
        "candidates.sources": "dataset,policy", "candidates.num_samples": 2, "candidates.max_new_tokens": 6,
        "candidates.sample_batch_size": 16, "candidates.ranker": "reward_model",
        "reward_model.hf_path": reward_dir, "reward_model.template": "safe_rlhf", "data.max_pairs": 16,
        "eval.max_pairs": 8, "eval.reward": "true", "eval.reward_prompts": 8, "loop.eval_every": 2,
        "loop.checkpoint_every": 2, "selection.metric": "reward"})
    out = ranking.main(_config(flags))
    assert out["num_candidates"] == 4
    lines = (tmp_path / "run" / "candidates" / "train.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines[1:]]
    assert len(records) == 16 and json.loads(lines[0])["count"] == 16
    pairs = read_preference_jsonl(str(ranking_data / "train.jsonl"))[:16]
    for record, pair in zip(records, pairs):
        assert record["origins"] == ["chosen", "rejected", "policy_0", "policy_1"]
        assert record["responses"][:2] == [pair.chosen, pair.rejected]
    # The cached rewards are the reward model's scores of exactly those texts.
    scorer = RewardScorer(RewardModelConfig(hf_path=reward_dir, template="safe_rlhf"), mesh=None)
    rewards = scorer.score([p.prompt for p in pairs for _ in range(4)], [t for r in records for t in r["responses"]])
    np.testing.assert_allclose(rewards.reshape(16, 4), [r["rewards"] for r in records], rtol=1e-5, atol=1e-6)
    assert np.std([r["rewards"] for r in records]) > 0
    evals = _evals(tmp_path / "run")
    assert sorted(evals) == [0, 2] and all(np.isfinite(r["eval/reward"]) for r in evals.values())
    first = out["selection"]["history"]
    assert [s for s, _ in first] == [0, 2]
    capsys.readouterr()

    resumed = ranking.main(_config(dict(flags, **{"loop.steps": "3"})))
    printed = capsys.readouterr().out
    assert "resumed from" in printed and "read 16 ranked prompts" in printed  # no sampling, no scoring
    assert resumed["selection"]["history"][:2] == first  # the record came back from the checkpoint
    assert [s for s, _ in resumed["selection"]["history"]] == [0, 2, 3]
    with pytest.raises(ValueError, match=r"candidate cache .*train.jsonl was built with other settings "
                                         r"\(candidates: .*num_samples': 2"):
        ranking.main(_config(dict(flags, **{"candidates.num_samples": "3", "loop.steps": "4"})))


def test_candidate_rows_share_the_prompt_and_carry_their_rewards(toy_dir):
    tokenizer = load_tokenizer(str(toy_dir / "tokenizer"))
    template = get_template("safe_rlhf")
    example = RankingExample(user_prompt("Name the red cat."), ("The cat is red.", "The dog is red.", "No."),
                             (0.5, -1.0, 2.0), ("chosen", "rejected", "policy_0"))
    config = PipelineConfig(batch_size=1, max_length=64, max_prompt_length=56)
    row = ranking_row(tokenize_ranking(tokenizer, template, config.tokenize_config(), encode_ranking(example)),
                      64, pad_id_of(tokenizer))
    assert {k: v.shape for k, v in row.items()} == {
        **{k: (3, 64) for k in ("input_ids", "attention_mask", "loss_mask", "positions", "segment_ids")},
        "rewards": (3,), "num_truncated": ()}
    np.testing.assert_array_equal(row["rewards"], [0.5, -1.0, 2.0])
    prompt = encode_prompt(tokenizer, template, example.prompt, 56)[0]
    for k, text in enumerate(example.responses):
        response = encode_response(tokenizer, template, text)
        n = len(prompt) + len(response)
        np.testing.assert_array_equal(row["input_ids"][k, :n], np.concatenate([prompt, response]))
        t = np.arange(64)
        np.testing.assert_array_equal(row["loss_mask"][k], (t >= len(prompt)) & (t < n))
        assert row["attention_mask"][k].sum() == n and int(row["num_truncated"]) == 0


def _random_batch(rng, b, k, t, vocab):
    """[B, K, T] candidate rows: a shared prompt of 5 tokens, responses of 2..t-5 tokens."""
    prompt = rng.integers(3, vocab, (b, 1, 5))
    ids = np.concatenate([np.broadcast_to(prompt, (b, k, 5)), rng.integers(3, vocab, (b, k, t - 5))], -1)
    lengths = rng.integers(7, t + 1, (b, k))
    pos = np.arange(t)
    attention = (pos < lengths[..., None]).astype(np.int32)
    return {"input_ids": (ids * attention).astype(np.int32), "attention_mask": attention,
            "loss_mask": ((pos >= 5) & (pos < lengths[..., None])).astype(np.int32),
            "positions": (pos * attention).astype(np.int32), "segment_ids": attention,
            "rewards": rng.normal(size=(b, k)).astype(np.float32)}


def test_micro_batch_accumulation_equals_full_batch():
    # PRO with K = 3 (reward-gap temperatures, SFT term); RRHF runs through the same step and
    # accumulation code with another loss partial.
    model = create_model(LlamaForCausalLM, preset("tiny", vocab_size=64), seed=1)
    graphdef, params = split_model(model)
    batch = {k: jnp.asarray(v) for k, v in _random_batch(np.random.default_rng(0), 8, 3, 16, 64).items()}
    loss = make_ranking_loss("pro", pro=PROConfig(), rrhf=RRHFConfig(), num_candidates=3)
    tx = optax.sgd(0.1)  # parameters move by the gradient itself (Adam would amplify tiny ones)

    # The [B, K, T] -> [B * K, T] layout: the step's loss equals the loss of candidate sums computed
    # one candidate column at a time.
    @jax.jit
    def column_loss(params):
        m = nnx.merge(graphdef, params)
        fields = ("input_ids", "attention_mask", "positions", "segment_ids")
        logps = [model_token_logps(m, *(batch[f][:, c] for f in fields)) for c in range(3)]
        sums = jnp.stack([masked_sum(lp, batch["loss_mask"][:, c], axis=-1) for c, lp in enumerate(logps)], 1)
        return loss(sums, masked_count(batch["loss_mask"], axis=-1), batch["rewards"])[0]

    expected_loss = column_loss(params)

    results = []
    for micro in (1, 4):
        state = init_train_state(jax.tree.map(jnp.copy, params), tx)
        step = jit_step(ranking_step, graphdef=graphdef, tx=tx, loss=loss, num_micro=micro)
        state, metrics = step(state, batch)
        np.testing.assert_allclose(metrics["loss"], expected_loss, rtol=1e-5)
        assert float(metrics["count"]) == 8
        results.append(state.params)
    full, micro, start = (jax.tree.leaves(jax.device_get(p)) for p in (*results, params))
    assert max(np.max(np.abs(a - b)) for a, b in zip(full, start)) > 1e-3
    for a, b in zip(full, micro):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)


def test_bad_config_is_rejected_before_loading(toy_dir, ranking_data, tmp_path):
    def fails(match, error=ValueError, **extra):
        with pytest.raises(error, match=match):
            ranking.main(_config(_flags(toy_dir, ranking_data, tmp_path, 2, **extra)))

    fails(r"algorithm='dpo'; choose from \['pro', 'rrhf'\]", algorithm="dpo")
    fails(r"candidates.ranker='labels' cannot rank candidates of \['policy'\]",
          **{"candidates.sources": "dataset,policy", "candidates.num_samples": 2})
    fails(r"candidates.sources: 'web' is unknown", **{"candidates.sources": "dataset,web"})
    fails(r"candidates.num_samples=2 has no effect without the 'policy' source", **{"candidates.num_samples": 2})
    fails(r"selection.metric='reward'; choose from .* \('reward' with eval.reward=true\)",
          **{"selection.metric": "reward"})
    fails(r"selection.metric='margin' needs validation data: set eval.path",
          **{"selection.metric": "margin", "eval.path": ""})
    fails(r"reward_model.hf_path is not set", **{"candidates.ranker": "reward_model"})
    (tmp_path / "lm").mkdir()
    (tmp_path / "lm" / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    fails(r"reward_model.hf_path='.*lm' holds \['LlamaForCausalLM'\], not a reward model",
          **{"eval.reward": "true", "reward_model.hf_path": tmp_path / "lm"})
    fails(r"reward_model.hf_path: .*tokenizer: no config.json", FileNotFoundError,
          **{"eval.reward": "true", "reward_model.hf_path": toy_dir / "tokenizer"})
    fails(r"data.template='chatml': unknown prompt template", **{"data.template": "chatml"})
    fails(r"pro.sft_weight=-1.0 must be >= 0", **{"pro.sft_weight": -1})
    fails(r"eval.path: data path .*nope.jsonl' does not exist", FileNotFoundError,
          **{"eval.path": tmp_path / "nope.jsonl"})
