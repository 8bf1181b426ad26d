"""Readers of the dialogue datasets on hand-checked fixture rows (tests/fixtures/dialogue)."""

import json
import lzma
import os
import shutil

import pytest

from rlhf_jax.data import (
    DataFormatError,
    is_dual_safe,
    is_dual_unsafe,
    preference_pairs,
    preferred_response_id,
    read_alpaca,
    read_preference_jsonl,
    read_safe_rlhf,
    safe_responses,
    unique_prompts,
    write_preference_jsonl,
)
from rlhf_jax.data.records import iter_records
from rlhf_jax.data.schema import Turn, user_prompt

FIXTURES = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "fixtures", "dialogue"))
SAFE_TRAIN = os.path.join(FIXTURES, "pku_safe_rlhf", "train.jsonl")


@pytest.fixture(scope="module")
def safe_rows():
    return read_safe_rlhf(SAFE_TRAIN)


def test_safe_rlhf_merge_rule_on_hand_checked_rows(safe_rows):
    # Row by row (fixture line: labels -> the paper's rule):
    # 1 both safe, better=1            -> 1 (more helpful)
    # 2 both safe, better=0            -> 0
    # 3 r0 safe only, safer=0          -> 0 (safer), although better=1
    # 4 r1 safe only, safer=1          -> 1
    # 5 both unsafe, safer=1           -> 1 (safer), although better=0
    # 6 both unsafe, safer=0           -> 0
    # 7 r0 safe only, safer=0          -> 0
    # 8 r0 safe only, but safer=1      -> 1 (label followed; counted as a conflict)
    assert [preferred_response_id(r) for r in safe_rows] == [1, 0, 0, 1, 1, 0, 0, 1]
    assert [is_dual_safe(r) for r in safe_rows] == [True, True] + [False] * 6
    assert [is_dual_unsafe(r) for r in safe_rows] == [False] * 4 + [True, True, False, False]
    pairs, counts = preference_pairs(safe_rows)
    assert counts == {"rows": 8, "kept": 8, "dropped_dual_unsafe": 0, "dropped_dual_safe": 0,
                      "safety_label_conflicts": 1}
    assert pairs[0].prompt == user_prompt("How do I keep my bike from rusting?")
    assert pairs[0].chosen == "Store it indoors, dry it after rain and oil the chain every month."
    assert pairs[0].rejected == "Keep it dry and oil the chain."
    assert pairs[3].chosen == "I can't help with that; forging IDs is illegal."
    assert pairs[4].chosen == "Use pressure points on the neck."
    assert (pairs[2].meta["chosen_safe"], pairs[2].meta["rejected_safe"]) == (True, False)
    assert pairs[2].meta["where"].endswith("train.jsonl:3")


def test_safe_rlhf_filters_are_cumulative_as_in_table_2(safe_rows):
    pairs, counts = preference_pairs(safe_rows, drop_dual_unsafe=True)
    assert counts["kept"] == 6 and counts["dropped_dual_unsafe"] == 2
    assert [p.meta["where"].rsplit(":", 1)[1] for p in pairs] == ["1", "2", "3", "4", "7", "8"]
    pairs, counts = preference_pairs(safe_rows, drop_dual_unsafe=True, drop_dual_safe=True)
    assert (counts["kept"], counts["dropped_dual_unsafe"], counts["dropped_dual_safe"]) == (4, 2, 2)
    assert [p.meta["where"].rsplit(":", 1)[1] for p in pairs] == ["3", "4", "7", "8"]
    # Without dual pairs, every pair has exactly one safe response.
    assert all(p.meta["chosen_safe"] != p.meta["rejected_safe"] for p in pairs)
    _, counts = preference_pairs(safe_rows, drop_dual_safe=True)
    assert counts["kept"] == 6 and counts["dropped_dual_safe"] == 2


def test_safe_rlhf_sft_safe_and_prompts(safe_rows):
    examples, counts = safe_responses(safe_rows)
    # Safe responses: rows 1, 2 (both), 3, 4, 7, 8 (one each) = 8; row 7's response_0 repeats row 1's.
    assert counts == {"rows": 8, "kept": 7, "unsafe_responses": 8, "duplicates": 1}
    assert "Hit them with a wet towel." not in [e.response for e in examples]
    assert examples[4].response == "Ask your neighbour for the password."
    assert examples[5].response == "I can't help with that; forging IDs is illegal."
    prompts, counts = unique_prompts(safe_rows)
    assert counts == {"rows": 8, "kept": 7, "duplicates": 1}
    assert prompts[0] == (Turn("user", "How do I keep my bike from rusting?"),)


def test_safe_rlhf_reads_the_xz_layout(tmp_path, safe_rows):
    path = tmp_path / "train.jsonl.xz"
    with open(SAFE_TRAIN, "rb") as src, lzma.open(path, "wb") as dst:
        shutil.copyfileobj(src, dst)
    assert [(r.prompt, r.response_1) for r in read_safe_rlhf(path)] == [
        (r.prompt, r.response_1) for r in safe_rows]


def _write_lines(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_safe_rlhf_bad_rows_name_file_line_and_field(tmp_path):
    good = json.loads(open(SAFE_TRAIN).readline())
    missing = dict(good)
    del missing["safer_response_id"]
    path = _write_lines(tmp_path / "train.jsonl", [good, good, missing])
    with pytest.raises(DataFormatError, match=r"train\.jsonl:3: field 'safer_response_id': missing"):
        read_safe_rlhf(path)
    path = _write_lines(tmp_path / "t2.jsonl", [good, {**good, "is_response_1_safe": "yes"}])
    with pytest.raises(DataFormatError, match=r"t2\.jsonl:2: field 'is_response_1_safe'.*'yes'"):
        read_safe_rlhf(path)
    path = _write_lines(tmp_path / "t3.jsonl", [{**good, "better_response_id": 2}])
    with pytest.raises(DataFormatError, match=r"t3\.jsonl:1: field 'better_response_id'.*\[0, 1\]"):
        read_safe_rlhf(path)
    (tmp_path / "t4.jsonl").write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(DataFormatError, match=r"t4\.jsonl:2: invalid JSON"):
        read_safe_rlhf(tmp_path / "t4.jsonl")


def test_alpaca_rows_and_errors(tmp_path):
    examples = read_alpaca(os.path.join(FIXTURES, "alpaca", "alpaca_data.json"))
    assert len(examples) == 4
    assert examples[0].prompt == user_prompt("Give three tips for staying healthy.")
    assert examples[1].prompt == user_prompt("Translate the sentence into French.\n\nThe cat sleeps.")
    assert examples[1].response == "Le chat dort."
    path = tmp_path / "alpaca_data.json"
    path.write_text(json.dumps([{"instruction": "a", "input": "", "output": "b"},
                                {"instruction": "c", "output": "d"}]))
    with pytest.raises(DataFormatError, match=r"alpaca_data\.json:2: field 'input': missing"):
        read_alpaca(path)


def test_alpaca_reads_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"instruction": "Name a colour.", "input": "", "output": "Blue.", "text": "ignored"}]
    path = tmp_path / "train-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    (example,) = read_alpaca(path)
    assert (example.prompt, example.response) == (user_prompt("Name a colour."), "Blue.")


def test_generic_jsonl_reads_documented_format_and_round_trips(tmp_path):
    pairs = read_preference_jsonl(os.path.join(FIXTURES, "preference_jsonl", "train.jsonl"))
    assert len(pairs) == 3
    assert pairs[1].prompt == (Turn("user", "Hi!"), Turn("assistant", "Hello, how can I help?"),
                               Turn("user", "Recommend a book."))
    assert pairs[1].meta["source"] == "my-labels-v2"
    assert write_preference_jsonl(tmp_path / "out.jsonl", pairs) == 3
    again = read_preference_jsonl(tmp_path / "out.jsonl")
    assert [(p.prompt, p.chosen, p.rejected) for p in again] == [
        (p.prompt, p.chosen, p.rejected) for p in pairs]
    assert again[1].meta["source"] == "my-labels-v2"


@pytest.mark.parametrize("row, message", [
    ({"prompt": "q", "chosen": "a"}, r"x\.jsonl:2: field 'rejected': missing"),
    ({"prompt": "q", "chosen": "a", "rejected": "b", "choosen": "c"}, r"x\.jsonl:2: unknown keys \['choosen'\]"),
    ({"prompt": [{"role": "user", "content": "q"}, {"role": "user", "content": "r"}], "chosen": "a",
      "rejected": "b"}, r"x\.jsonl:2: field 'prompt': .*turn 1 has role 'user'"),
    ({"prompt": [{"role": "bot", "content": "q"}], "chosen": "a", "rejected": "b"},
     r"x\.jsonl:2: field 'prompt\[0\]'"),
    ({"prompt": "", "chosen": "a", "rejected": "b"}, r"x\.jsonl:2: field 'prompt': is empty"),
])
def test_generic_jsonl_errors(tmp_path, row, message):
    path = _write_lines(tmp_path / "x.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"}, row])
    with pytest.raises(DataFormatError, match=message):
        read_preference_jsonl(path)


def test_records_reject_blank_lines_and_non_objects(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"x": 1}\n\n{"x": 2}\n')
    with pytest.raises(DataFormatError, match=r"a\.jsonl:2: empty line"):
        list(iter_records(tmp_path / "a.jsonl"))
    (tmp_path / "b.jsonl").write_text('{"x": 1}\n[1, 2]\n')
    with pytest.raises(DataFormatError, match=r"b\.jsonl:2: expected a JSON object, got list"):
        list(iter_records(tmp_path / "b.jsonl"))
    (tmp_path / "c.csv").write_text("x\n")
    with pytest.raises(DataFormatError, match=r"c\.csv: unknown file type"):
        list(iter_records(tmp_path / "c.csv"))
