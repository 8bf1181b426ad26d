"""The evaluation protocol end to end: rollout-engine answers scored by reward and cost models."""

import numpy as np
import pytest

from rlhf_jax.data.schema import user_prompt
from rlhf_jax.data.templates import get_template
from rlhf_jax.data.tiny_tokenizer import train_tiny_tokenizer
from rlhf_jax.evaluation.generation import evaluate_policy_safety, generate_responses
from rlhf_jax.evaluation.metrics import help_harm_safety
from rlhf_jax.evaluation.scoring import score_texts
from rlhf_jax.models import LlamaForCausalLM, LlamaForScore, create_model, preset
from rlhf_jax.rollout import JaxSampler, RolloutConfig
from rlhf_jax.sharding import MeshConfig, make_mesh

QUESTIONS = ["How do I bake bread?", "Is the sky blue?", "Name a red fruit.", "What is two plus two?",
             "Tell me a joke about cats."]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalgen")
    tok = train_tiny_tokenizer(QUESTIONS * 3 + ["USER: ASSISTANT: BEGINNING OF CONVERSATION: apples bread"],
                               root / "tok", vocab_size=300)
    mesh = make_mesh(MeshConfig(2, 1, 1), devices=__import__("jax").devices()[:2])
    cfg = preset("tiny", vocab_size=len(tok))
    policy = create_model(LlamaForCausalLM, cfg, mesh=mesh, seed=1)
    reward = create_model(LlamaForScore, cfg, mesh=mesh, seed=2)
    cost = create_model(LlamaForScore, cfg, mesh=mesh, seed=3)
    sampler = JaxSampler(policy, mesh=mesh, prompt_buckets=(32,))
    rollout = RolloutConfig(max_new_tokens=6, greedy=True, eos_token_id=tok.eos_token_id,
                            pad_token_id=tok.pad_token_id or 0)
    return tok, sampler, reward, cost, rollout


def test_batched_generation_matches_one_prompt_at_a_time(setup):
    tok, sampler, _, _, rollout = setup
    convs = [user_prompt(q) for q in QUESTIONS]
    template = get_template("safe_rlhf")
    batched = generate_responses(sampler, None, tok, template, convs, rollout, batch_size=2,
                                 max_prompt_length=32)
    assert len(batched) == 5 and all(isinstance(r, str) for r in batched)
    alone = generate_responses(sampler, None, tok, template, convs[4:], rollout, batch_size=2,
                               max_prompt_length=32)
    assert alone[0] == batched[4]  # the padded last batch gives the same answer
    assert len(set(batched)) > 1  # different prompts, different greedy answers
    with pytest.raises(ValueError, match="sampling .* needs a PRNG key"):
        generate_responses(sampler, None, tok, template, convs, RolloutConfig(max_new_tokens=2),
                           batch_size=2)


def test_policy_safety_metrics_are_the_judges_scores_of_its_answers(setup):
    tok, sampler, reward, cost, rollout = setup
    convs = [user_prompt(q) for q in QUESTIONS]
    template = get_template("safe_rlhf")
    baseline = ["I do not know."] * len(convs)
    metrics, responses = evaluate_policy_safety(
        sampler, None, tok, template, convs, rollout, reward_model=reward, reward_tokenizer=tok,
        cost_model=cost, cost_tokenizer=tok, baseline_responses=baseline, batch_size=2,
        max_prompt_length=32)
    prompts = [template.render_prompt(c, eos_token=tok.eos_token) for c in convs]
    r = score_texts(reward, tok, prompts, responses, batch_size=2)
    c = score_texts(cost, tok, prompts, responses, batch_size=2)
    b = score_texts(reward, tok, prompts, baseline, batch_size=2)
    expected = help_harm_safety(r, c, b)
    assert metrics.keys() == expected.keys()
    for key in expected:
        np.testing.assert_allclose(metrics[key], expected[key], rtol=1e-6)
    assert metrics["num_responses"] == 5
