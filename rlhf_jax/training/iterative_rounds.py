"""One round of iterative DPO's data: prompts, samples from the policy, labels, pairs, reference.

Round r (1-based) of a run in `workdir`:
1. `round_prompts`: `prompts_per_round` prompts, walking through the prompt set in a shuffled order
   (a new order each pass, seeded), so successive rounds see different prompts;
2. `sample_responses`: k samples per prompt from the current policy with the rollout engine
   (`JaxSampler`), the PRNG key `fold_in(key(seed), r)`: the round's samples are a function of the
   policy and the round number only, so a round regenerated after a crash is the same round;
3. a labeler scores them and a pair rule forms pairs (`iterative_labels`);
4. the pairs go to `workdir/rounds/<r>/pairs.jsonl` and the reference log-probs of every pair under
   the current policy (the new reference: DPO-Iter resets the reference to the latest policy) to
   `workdir/rounds/<r>/reference_logps.npz`. Training reads both back from there, so a run resumed
   in the middle of round r trains on exactly the same pairs and reference without sampling again.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from rlhf_jax.data import read_preference_jsonl, write_preference_jsonl
from rlhf_jax.data.tokenize import encode_prompt
from rlhf_jax.rollout import FinishReason, PromptBatch, RolloutConfig
from rlhf_jax.training.dpo_reference import ReferenceTable, compute_table, records_fingerprint
from rlhf_jax.training.iterative_labels import PromptItem
from rlhf_jax.training.preference_data import pair_records


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """How each round samples from the policy."""

    samples_per_prompt: int = 4  # k
    prompts_per_round: int = 0  # 0: every prompt, every round
    max_new_tokens: int = 256
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    batch_size: int = 64  # rows (prompt x sample) per generate call; a multiple of k


def round_prompts(items: Sequence[PromptItem], round_index: int, per_round: int, seed: int) -> list[PromptItem]:
    """The prompts of round `round_index` (1-based): positions (r-1)P .. rP-1 of the prompt set
    in a shuffled order, reshuffled (seed + pass) on every pass over it."""
    n = len(items)
    per_round = per_round or n
    orders: dict[int, np.ndarray] = {}
    out = []
    for pos in range((round_index - 1) * per_round, round_index * per_round):
        epoch = pos // n
        if epoch not in orders:
            orders[epoch] = np.random.default_rng(seed + epoch).permutation(n)
        out.append(items[orders[epoch][pos % n]])
    return out


def sample_responses(sampler, params, items: Sequence[PromptItem], tokenizer, template, cfg: SamplingConfig, *,
                     max_prompt_length: int, key: jax.Array) -> tuple[list[list[str]], dict[str, float]]:
    """k decoded responses per prompt (EOS and padding removed) and sampling statistics."""
    k = cfg.samples_per_prompt
    prompt_ids = [encode_prompt(tokenizer, template, item.prompt, max_prompt_length)[0] for item in items]
    rows = [ids for ids in prompt_ids for _ in range(k)]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rollout = RolloutConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_k=cfg.top_k,
                            top_p=cfg.top_p, eos_token_id=tokenizer.eos_token_id, pad_token_id=pad_id)
    texts, lengths, cut = [], [], 0
    sampler.update_params(params)  # the sampler's one copy of the policy, in its layout
    for chunk_index, start in enumerate(range(0, len(rows), cfg.batch_size)):
        chunk = rows[start:start + cfg.batch_size]
        filled = chunk + [chunk[-1]] * (cfg.batch_size - len(chunk))  # one shape for every call
        out = sampler.generate(None, PromptBatch.from_lists(filled, pad_id), rollout,
                               key=jax.random.fold_in(key, chunk_index))
        ids, n, finish = jax.device_get((out.response_ids_BxN, out.lengths_B, out.finish_reason_B))
        for row in range(len(chunk)):
            tokens = ids[row, :n[row]]
            if finish[row] == FinishReason.EOS:
                tokens = tokens[:-1]
            texts.append(tokenizer.decode(tokens.tolist(), skip_special_tokens=True))
            lengths.append(int(n[row]))
            cut += int(finish[row] == FinishReason.LENGTH)
    responses = [texts[i * k:(i + 1) * k] for i in range(len(items))]
    return responses, {"mean_response_tokens": float(np.mean(lengths)), "cut_by_length": cut / len(rows)}


def round_dir(workdir: str, round_index: int) -> str:
    return os.path.join(workdir, "rounds", str(round_index))


def write_round(directory: str, pairs, stats: dict[str, float]) -> None:
    """Stores a round's pairs (the JSON Lines preference format) and its statistics."""
    import json

    if jax.process_index() == 0:
        os.makedirs(directory, exist_ok=True)
        write_preference_jsonl(os.path.join(directory, "pairs.jsonl"), pairs)
        with open(os.path.join(directory, "stats.json"), "w") as f:
            json.dump(stats, f, indent=1, sort_keys=True)


def read_round_records(directory: str) -> list[dict[str, Any]]:
    """The stored pairs of a round as training records (with `example_index`)."""
    path = os.path.join(directory, "pairs.jsonl")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: the round's pairs are missing; cannot resume inside this round")
    return pair_records(read_preference_jsonl(path))


def round_reference(directory: str, records, *, compute=None) -> ReferenceTable:
    """The round's reference table: computed (`compute(records)` -> batches' logps) and stored
    when `compute` is given, else read back (and checked against the records)."""
    path = os.path.join(directory, "reference_logps.npz")
    key = records_fingerprint(records)
    if compute is None:
        return ReferenceTable.load(path, key)
    table = compute(records)
    if jax.process_index() == 0:
        table.save(path, key)
    return table


def reference_of_policy(logps_fn, params, batches, put):
    """A `compute` for `round_reference`: the log-probs under `params` (the current policy)."""
    return lambda records: compute_table(logps_fn, params, batches(records), len(records), put)
