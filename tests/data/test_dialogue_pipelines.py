"""TFDS builds from the fixture files, and grain epochs over them: layouts, resume, shards, packing."""

import collections
import dataclasses
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from rlhf_jax.data import (
    AlpacaSft,
    AnthropicHhRlhf,
    PipelineConfig,
    PkuSafeRlhf,
    PreferenceJsonl,
    batch_iterator,
    count_truncated,
    get_template,
    preference_dataset,
    preference_pairs,
    prepare,
    prompt_dataset,
    read_alpaca,
    read_safe_rlhf,
    sft_dataset,
)
from rlhf_jax.data.schema import decode_pair, decode_prompt, decode_sft, encode_sft
from rlhf_jax.data.tfds_builders import HHRLHFConfig, skip_counts
from rlhf_jax.data.tiny_tokenizer import train_tiny_tokenizer

FIXTURES = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "fixtures", "dialogue"))
SAFE = get_template("safe_rlhf")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    texts = []
    for root, _, files in os.walk(FIXTURES):
        texts += [open(os.path.join(root, f), encoding="utf-8").read() for f in files]
    return train_tiny_tokenizer(texts + [SAFE.begin], tmp_path_factory.mktemp("tok"), vocab_size=400)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def alpaca_source(data_dir):
    return prepare(AlpacaSft, os.path.join(FIXTURES, "alpaca"), data_dir).as_data_source()["train"]


def test_safe_rlhf_build_matches_reader_and_records_counts(data_dir):
    src = os.path.join(FIXTURES, "pku_safe_rlhf")
    builder = prepare(PkuSafeRlhf, src, data_dir, config="pairs_no_dual_unsafe_no_dual_safe")
    assert builder.info.file_format.value == "array_record"
    assert skip_counts(builder)["train"] == {"rows": 8, "kept": 4, "dropped_dual_unsafe": 2,
                                             "dropped_dual_safe": 2, "safety_label_conflicts": 1}
    source = tfds.data_source("pku_safe_rlhf/pairs_no_dual_unsafe_no_dual_safe", split="train",
                              data_dir=data_dir)
    expected, _ = preference_pairs(read_safe_rlhf(os.path.join(src, "train.jsonl")),
                                   drop_dual_unsafe=True, drop_dual_safe=True)
    stored = sorted((decode_pair(source[i]) for i in range(len(source))), key=lambda p: p.meta["where"])
    assert stored == expected
    test = tfds.data_source("pku_safe_rlhf/pairs_no_dual_unsafe_no_dual_safe", split="test",
                            data_dir=data_dir)
    assert len(test) == 1  # of 3 test rows, one is dual-safe and one dual-unsafe
    prompts = prepare(PkuSafeRlhf, src, data_dir, config="prompts").as_data_source()["train"]
    assert len(prompts) == 7
    # The counts survive a reload from disk.
    reloaded = tfds.builder("pku_safe_rlhf/pairs_no_dual_unsafe_no_dual_safe", data_dir=data_dir)
    assert skip_counts(reloaded)["test"]["kept"] == 1


def test_other_builders(data_dir, alpaca_source):
    config = HHRLHFConfig(name="harmless_helpful", subsets=("harmless-base", "helpful-base"))
    hh = prepare(AnthropicHhRlhf, os.path.join(FIXTURES, "hh_rlhf"), data_dir, config=config)
    sources = hh.as_data_source()
    assert (len(sources["train"]), len(sources["test"])) == (5, 3)
    turns = sorted(len(decode_pair(sources["train"][i]).prompt) for i in range(5))
    assert turns == [1, 1, 1, 3, 5]
    stored = sorted(decode_sft(alpaca_source[i]).response for i in range(len(alpaca_source)))
    assert stored == sorted(e.response for e in read_alpaca(os.path.join(FIXTURES, "alpaca",
                                                                          "alpaca_data.json")))
    generic = prepare(PreferenceJsonl, os.path.join(FIXTURES, "preference_jsonl"), data_dir)
    assert sorted(generic.info.splits) == ["test", "train"]
    with pytest.raises(FileNotFoundError, match="no 'train' file"):
        prepare(PreferenceJsonl, os.path.join(FIXTURES, "alpaca"), os.path.join(data_dir, "empty"))


def _decode(tokenizer, ids, mask):
    return tokenizer.decode(np.asarray(ids)[np.asarray(mask) == 1])


def test_preference_batches_follow_the_layout(tokenizer, data_dir):
    source = prepare(PkuSafeRlhf, os.path.join(FIXTURES, "pku_safe_rlhf"), data_dir,
                     config="pairs").as_data_source()["train"]
    config = PipelineConfig(batch_size=4, max_length=160, max_prompt_length=96, shuffle=False)
    batches = list(preference_dataset(source, tokenizer, SAFE, config, shard_index=0, shard_count=1))
    assert len(batches) == 2
    batch = batches[0]
    keys = {f"{s}_{k}" for s in ("chosen", "rejected")
            for k in ("input_ids", "attention_mask", "loss_mask", "positions", "segment_ids")}
    assert set(batch) == keys | {"num_truncated"}
    assert all(batch[k].shape == (4, 160) and batch[k].dtype == np.int32 for k in keys)
    pair = decode_pair(source[0])
    ids, attn, loss = batch["chosen_input_ids"][0], batch["chosen_attention_mask"][0], batch["chosen_loss_mask"][0]
    n = int(attn.sum())
    assert ids[0] == tokenizer.bos_token_id and ids[n - 1] == tokenizer.eos_token_id
    assert np.all(ids[n:] == tokenizer.pad_token_id) and np.all(loss[n:] == 0)
    assert _decode(tokenizer, ids[1:n], 1 - loss[1:n]) == SAFE.render_prompt(pair.prompt)
    assert _decode(tokenizer, ids[:n - 1], loss[:n - 1]) == pair.chosen
    assert _decode(tokenizer, batch["rejected_input_ids"][0], batch["rejected_loss_mask"][0]) == (
        pair.rejected + "</s>")
    assert list(batch["chosen_positions"][0][:n]) == list(range(n))
    assert batch["num_truncated"].sum() == 0


def _sft_source():
    return [encode_sft(e) for e in read_alpaca(os.path.join(FIXTURES, "alpaca", "alpaca_data.json"))] * 2


def test_grain_epoch_shuffles_by_seed_and_resumes_mid_epoch(tokenizer):
    source = _sft_source()  # 8 examples
    config = PipelineConfig(batch_size=2, max_length=64, max_prompt_length=48, seed=3, num_epochs=2)
    ds = sft_dataset(source, tokenizer, SAFE, config, shard_index=0, shard_count=1)
    full = list(ds)
    assert len(full) == 8  # 2 epochs x 8 examples / 2
    epoch = np.concatenate([b["input_ids"] for b in full[:4]])
    unshuffled = np.concatenate([b["input_ids"] for b in sft_dataset(
        source, tokenizer, SAFE, PipelineConfig(2, 64, 48, shuffle=False), shard_index=0, shard_count=1)])
    # One epoch holds every example exactly once, in another order.
    assert sorted(map(tuple, epoch)) == sorted(map(tuple, unshuffled))
    assert not np.array_equal(epoch, unshuffled)
    assert not np.array_equal(np.concatenate([b["input_ids"] for b in full[4:]]), epoch)

    it = batch_iterator(ds)
    for _ in range(3):
        next(it)
    state = it.get_state()
    resumed = batch_iterator(sft_dataset(source, tokenizer, SAFE, config, shard_index=0, shard_count=1),
                             state)
    rest = list(resumed)
    assert len(rest) == 5
    for got, want in zip(rest, full[3:]):
        assert all(np.array_equal(got[k], want[k]) for k in want)
    other_seed = sft_dataset(source, tokenizer, SAFE, PipelineConfig(2, 64, 48, seed=4), shard_index=0,
                             shard_count=1)
    assert not np.array_equal(np.concatenate([b["input_ids"] for b in other_seed]), epoch)


def test_shards_are_disjoint_and_equal_sized(tokenizer, alpaca_source):
    config = PipelineConfig(batch_size=1, max_length=64, max_prompt_length=48, shuffle=False)
    shards = [[tuple(b["input_ids"][0]) for b in
               sft_dataset(alpaca_source, tokenizer, SAFE, config, shard_index=i, shard_count=3)]
              for i in range(3)]
    assert [len(s) for s in shards] == [1, 1, 1]  # 4 // 3 each; one example left out
    assert len(set(sum(shards, []))) == 3
    with pytest.raises(ValueError, match="4 examples cannot be split over 5"):
        sft_dataset(alpaca_source, tokenizer, SAFE, config, shard_index=0, shard_count=5)


def test_truncation_is_counted(tokenizer):
    source = _sft_source()[:4]
    config = PipelineConfig(batch_size=4, max_length=100, max_prompt_length=72, shuffle=False)
    lengths = []
    for record in source:
        example = decode_sft(record)
        prompt = 1 + len(tokenizer.encode(SAFE.render_prompt(example.prompt), add_special_tokens=False))
        response = len(tokenizer.encode(example.response, add_special_tokens=False)) + 1
        lengths.append((prompt, response))
    expected = sum(p > 72 or min(p, 72) + r > 100 for p, r in lengths)
    assert 0 < expected < 4, lengths  # the fixture must exercise both cases
    assert count_truncated(source, tokenizer, SAFE, config, "sft") == (expected, 4)
    (batch,) = sft_dataset(source, tokenizer, SAFE, config, shard_index=0, shard_count=1)
    assert batch["num_truncated"].sum() == expected
    assert batch["attention_mask"].sum(axis=1).max() == 100
    packed = sft_dataset(source, tokenizer, SAFE, dataclasses.replace(config, pack=True, batch_size=1),
                         shard_index=0, shard_count=1)
    assert sum(int(b["num_truncated"].sum()) for b in packed) == expected
    prompts = prompt_dataset(source, tokenizer, SAFE, PipelineConfig(4, 100, 72, shuffle=False),
                             shard_index=0, shard_count=1)
    (pbatch,) = prompts
    assert 0 < pbatch["num_truncated"].sum() == sum(p > 72 for p, _ in lengths)


def test_packed_rows_hold_the_same_sequences(tokenizer):
    source = _sft_source()
    config = PipelineConfig(batch_size=1, max_length=256, max_prompt_length=128, shuffle=False)
    plain = [b for b in sft_dataset(source, tokenizer, SAFE, config, shard_index=0, shard_count=1)]
    want = collections.Counter()
    for b in plain:
        n = int(b["attention_mask"][0].sum())
        want[(tuple(b["input_ids"][0][:n]), tuple(b["loss_mask"][0][:n]))] += 1
    packed_config = PipelineConfig(batch_size=2, max_length=256, max_prompt_length=128, shuffle=False,
                                   pack=True, packing_bins=2, drop_remainder=False)
    got = collections.Counter()
    rows = 0
    for batch in sft_dataset(source, tokenizer, SAFE, packed_config, shard_index=0, shard_count=1):
        for r in range(len(batch["input_ids"])):
            rows += 1
            seg, pos = batch["segment_ids"][r], batch["positions"][r]
            assert np.array_equal(batch["attention_mask"][r], (seg > 0).astype(np.int32))
            for s in range(1, seg.max() + 1):
                at = seg == s
                assert list(pos[at]) == list(range(at.sum()))
                got[(tuple(batch["input_ids"][r][at]), tuple(batch["loss_mask"][r][at]))] += 1
    assert got == want
    assert rows < len(plain)  # packing saved rows


def test_prompt_batches_are_left_padded(tokenizer, alpaca_source):
    config = PipelineConfig(batch_size=4, max_length=192, max_prompt_length=128, shuffle=False)
    (batch,) = prompt_dataset(alpaca_source, tokenizer, SAFE, config)  # shards: jax process 0 of 1
    assert set(batch) == {"prompt_ids", "prompt_mask", "num_truncated"}
    mask = batch["prompt_mask"]
    assert np.all(mask[:, -1] == 1) and np.all(np.diff(mask, axis=1) >= 0)  # zeros, then ones
    first = decode_prompt(alpaca_source[0])
    ids = batch["prompt_ids"][0][mask[0] == 1]
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode(ids[1:]) == SAFE.render_prompt(first)


def test_config_errors():
    with pytest.raises(ValueError, match="max_prompt_length < max_length"):
        PipelineConfig(batch_size=2, max_length=8, max_prompt_length=8)
    with pytest.raises(ValueError, match="packing is for SFT only; pair rows are padded"):
        preference_dataset([], None, SAFE, PipelineConfig(2, 8, 4, pack=True))
