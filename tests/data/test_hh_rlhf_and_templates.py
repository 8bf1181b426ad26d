"""HH-RLHF prompt splitting on multi-turn transcripts, subset selection, and prompt templates."""

import gzip
import json
import os
import shutil

import pytest

from rlhf_jax.data import DataFormatError, get_template, parse_dialogue, read_hh_rlhf, split_pair
from rlhf_jax.data.hh_rlhf import MalformedTranscriptError, read_hh_file, split_transcript
from rlhf_jax.data.schema import Turn, user_prompt

HH_ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "fixtures", "dialogue", "hh_rlhf"))

MULTI = ("\n\nHuman: Hi\n\nAssistant: Hello! How can I help?\n\nHuman: Tell me about\n\nowls"
         "\n\nAssistant: Owls hunt at night.\n\nHuman: And by day?\n\nAssistant:")


def test_split_keeps_multi_turn_prompt_whole():
    chosen = MULTI + " They sleep, mostly."
    rejected = MULTI + " No idea."
    prompt, chosen_reply, rejected_reply = split_pair(chosen, rejected)
    assert prompt == MULTI
    assert (chosen_reply, rejected_reply) == ("They sleep, mostly.", "No idea.")
    assert prompt + " " + chosen_reply == chosen
    # A blank line inside a turn ("about\n\nowls") stays in that turn.
    assert parse_dialogue(prompt) == (
        Turn("user", "Hi"), Turn("assistant", "Hello! How can I help?"),
        Turn("user", "Tell me about\n\nowls"), Turn("assistant", "Owls hunt at night."),
        Turn("user", "And by day?"))


def test_split_errors():
    with pytest.raises(ValueError, match="no '\\\\n\\\\nAssistant:'"):
        split_transcript("\n\nHuman: hello")
    with pytest.raises(ValueError, match="prompts differ from character 9"):
        split_pair("\n\nHuman: a\n\nAssistant: x", "\n\nHuman: b\n\nAssistant: y")
    with pytest.raises(ValueError, match="text before the first"):
        parse_dialogue("Intro\n\nHuman: a\n\nAssistant:")
    with pytest.raises(ValueError, match="turn 1 has role 'user'"):
        parse_dialogue("\n\nHuman: a\n\nHuman: b\n\nAssistant:")


def test_hh_fixture_subsets_and_counts():
    pairs, counts = read_hh_rlhf(HH_ROOT, "train", ["harmless-base"])
    assert counts == {"rows": 3, "kept": 3, "skipped_malformed": 0}
    assert len(pairs[1].prompt) == 5 and pairs[1].prompt[-1] == Turn("user", "No, something meaner.")
    assert pairs[1].chosen.startswith("I don't want to help")
    assert pairs[1].rejected == "Put glue in his shampoo."
    assert pairs[1].meta["subset"] == "harmless-base"
    both, counts = read_hh_rlhf(HH_ROOT, "train", ["harmless-base", "helpful-base"])
    assert counts["kept"] == 5 and [p.meta["subset"] for p in both][-2:] == ["helpful-base"] * 2
    test, _ = read_hh_rlhf(HH_ROOT, "test", ["helpful-base"])
    assert test[0].prompt == user_prompt("What is the capital of Peru?")
    with pytest.raises(ValueError, match="unknown HH-RLHF subsets \\['harmless'\\]"):
        read_hh_rlhf(HH_ROOT, "train", ["harmless"])
    with pytest.raises(FileNotFoundError, match="helpful-online"):
        read_hh_rlhf(HH_ROOT, "train", ["helpful-online"])


def test_hh_reads_the_gz_layout(tmp_path):
    os.makedirs(tmp_path / "helpful-base")
    with open(os.path.join(HH_ROOT, "helpful-base", "train.jsonl"), "rb") as src, \
            gzip.open(tmp_path / "helpful-base" / "train.jsonl.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    pairs, _ = read_hh_rlhf(tmp_path, "train", ["helpful-base"])
    assert [p.chosen for p in pairs] == ["Milo, Luna or Oliver are popular.", "Six."]


def test_hh_malformed_rows_raise_or_are_counted(tmp_path):
    good = {"chosen": "\n\nHuman: q\n\nAssistant: a", "rejected": "\n\nHuman: q\n\nAssistant: b"}
    bad = {"chosen": "\n\nHuman: q\n\nAssistant: a", "rejected": "\n\nHuman: other\n\nAssistant: b"}
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in (good, bad, good)))
    with pytest.raises(MalformedTranscriptError, match=r"train\.jsonl:2: fields 'chosen'/'rejected'"):
        read_hh_file(path, "harmless-base")
    pairs, counts = read_hh_file(path, "harmless-base", skip_malformed=True)
    assert counts == {"rows": 3, "kept": 2, "skipped_malformed": 1} and len(pairs) == 2
    # A missing field is never skippable.
    path.write_text(json.dumps({"chosen": good["chosen"]}) + "\n")
    with pytest.raises(DataFormatError, match=r"train\.jsonl:1: field 'rejected': missing"):
        read_hh_file(path, "harmless-base", skip_malformed=True)


def test_templates_render_single_and_multi_turn():
    conv = (Turn("user", "Hi"), Turn("assistant", "Hello."), Turn("user", "Bye?"))
    safe = get_template("safe_rlhf")
    assert safe.render_prompt(conv[:1]) == "BEGINNING OF CONVERSATION: USER: Hi ASSISTANT:"
    assert safe.render_prompt(conv, eos_token="</s>") == (
        "BEGINNING OF CONVERSATION: USER: Hi ASSISTANT:Hello.</s>USER: Bye? ASSISTANT:")
    with pytest.raises(ValueError, match="needs eos_token"):
        safe.render_prompt(conv)
    # The hh template gives back the original HH transcript.
    assert get_template("hh").render_prompt(parse_dialogue(MULTI)) == MULTI
    assert get_template("hh").render_response("Yes.") == " Yes."
    assert get_template("alpaca").render_prompt(conv[:1]).endswith("### Instruction:\nHi\n\n### Response:\n")
    assert get_template("llama2_chat").render_prompt(conv) == "[INST] Hi [/INST] Hello. [INST] Bye? [/INST]"
    assert get_template("oasst_pythia").render_prompt(conv[:1]) == "<|prompter|>Hi<|endoftext|><|assistant|>"
    with pytest.raises(KeyError, match="unknown prompt template 'chatml'.*'alpaca'"):
        get_template("chatml")
    with pytest.raises(ValueError, match="last turn must be the user's"):
        safe.render_prompt(conv[:2])
