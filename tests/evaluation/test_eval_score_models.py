"""Scoring with tiny random judges saved in HF format: our Flax LLaMA and the PyTorch external judge.

Each batched, padded score must equal the HF PyTorch model's score of the text alone (batch of one,
no padding), and the SafeRLHF metrics must be those of the PyTorch scores.
"""

import numpy as np
import pytest
import torch
import transformers

from rlhf_jax.data.templates import get_template
from rlhf_jax.data.schema import user_prompt
from rlhf_jax.data.tiny_tokenizer import train_tiny_tokenizer
from rlhf_jax.evaluation import evaluate_safety, help_harm_safety, score_texts
from rlhf_jax.evaluation.external import ExternalRewardModel
from rlhf_jax.models.hf_io import load_pretrained

QUESTIONS = ["How do I keep my bike from rusting?", "How do I make a fake ID?", "Name a fruit.",
             "Can you tell me how to pick a lock? Explain every step in detail please."]
ANSWERS = ["Oil the chain.", "I can't help with that.", "An apple, or a pear, or a banana.", "No."]
BASELINE = ["Keep it dry.", "Buy a printer.", "A chair.", "Use a tension wrench and rake the pins."]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    texts = QUESTIONS + ANSWERS + BASELINE + ["BEGINNING OF CONVERSATION: USER: ASSISTANT:"]
    return train_tiny_tokenizer(texts, tmp_path_factory.mktemp("tok"), vocab_size=300)


def _save_llama_judge(path, tokenizer, seed):
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, num_labels=1,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id)
    model = transformers.LlamaForSequenceClassification(cfg).float().eval()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return model


def _torch_single_scores(model, tokenizer, prompts, responses):
    out = []
    for prompt, response in zip(prompts, responses):
        ids = tokenizer(prompt + response + tokenizer.eos_token)["input_ids"]
        with torch.no_grad():
            out.append(float(model(torch.tensor([ids])).logits[0, 0]))
    return np.asarray(out, np.float32)


def test_help_harm_safety_with_flax_judges_saved_in_hf_format(tmp_path, tokenizer):
    prompts = [get_template("safe_rlhf").render_prompt(user_prompt(q)) for q in QUESTIONS]
    reward_torch = _save_llama_judge(tmp_path / "reward", tokenizer, seed=0)
    cost_torch = _save_llama_judge(tmp_path / "cost", tokenizer, seed=1)
    reward, cost = load_pretrained(str(tmp_path / "reward")), load_pretrained(str(tmp_path / "cost"))

    want_reward = _torch_single_scores(reward_torch, tokenizer, prompts, ANSWERS)
    got_reward = score_texts(reward, tokenizer, prompts, ANSWERS, batch_size=4)
    np.testing.assert_allclose(got_reward, want_reward, rtol=1e-4, atol=1e-5)

    want_cost = _torch_single_scores(cost_torch, tokenizer, prompts, ANSWERS)
    # Centre the random cost model's scores so that both safe and unsafe answers occur.
    shift = float(np.median(want_cost))
    metrics = evaluate_safety(reward, tokenizer, cost, tokenizer, prompts, ANSWERS,
                              baseline_responses=BASELINE, batch_size=4)
    want_baseline = _torch_single_scores(reward_torch, tokenizer, prompts, BASELINE)
    expected = help_harm_safety(want_reward, want_cost, want_baseline)
    assert metrics.keys() == expected.keys()
    for key in expected:
        assert metrics[key] == pytest.approx(expected[key], rel=1e-4, abs=1e-5), key
    costs = score_texts(cost, tokenizer, prompts, ANSWERS, batch_size=4) - shift
    assert help_harm_safety(want_reward, costs)["safety_rate"] == np.mean(want_cost - shift <= 0)


def test_external_gpt_neox_judge_matches_hf_forward(tmp_path, tokenizer):
    torch.manual_seed(0)
    cfg = transformers.GPTNeoXConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=256, num_labels=1,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id)
    model = transformers.GPTNeoXForSequenceClassification(cfg).float().eval()
    model.save_pretrained(tmp_path / "judge")
    tokenizer.save_pretrained(tmp_path / "judge")

    judge = ExternalRewardModel.from_pretrained(tmp_path / "judge")
    prompts = [get_template("oasst_pythia").render_prompt(user_prompt(q)) for q in QUESTIONS]
    got = judge.score_texts(prompts, ANSWERS, batch_size=3)
    want = _torch_single_scores(model, tokenizer, prompts, ANSWERS)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert len(set(np.round(got, 6))) == len(got)  # distinct texts, distinct scores
    with pytest.raises(FileNotFoundError, match="no config.json"):
        ExternalRewardModel.from_pretrained(tmp_path / "missing")
