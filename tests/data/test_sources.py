"""load_records: formats, field mapping, and errors that name file, line and field."""

from __future__ import annotations

import json

import pytest

from rlsys.data.sources import DataError, load_records


def _write_jsonl(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return str(path)


def test_jsonl_with_field_mapping(tmp_path):
    path = _write_jsonl(tmp_path / "d.jsonl", [
        {"question": "1+1?", "solution": "2", "extra": 5},
        {"question": "2+2?", "solution": "4"},
    ])
    loaded = load_records(path, fields={"prompt": "question", "response": "solution"})
    assert loaded.records == [
        {"prompt": "1+1?", "response": "2"},
        {"prompt": "2+2?", "response": "4"},
    ]
    assert loaded.skipped == 0 and loaded.name == "d.jsonl"


def test_canonical_keys_without_mapping_and_numeric_answer(tmp_path):
    path = _write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p", "answer": 42, "id": 1}])
    assert load_records(path).records == [{"prompt": "p", "answer": "42"}]


def test_bad_json_names_file_and_line(tmp_path):
    path = _write_jsonl(tmp_path / "bad.jsonl", [{"text": "a"}, "", '{"text": "b"', {"text": "c"}])
    with pytest.raises(DataError, match=r"bad\.jsonl:line 3: invalid JSON"):
        load_records(path)


def test_missing_mapped_field_names_field_and_line(tmp_path):
    path = _write_jsonl(tmp_path / "m.jsonl", [{"q": "a", "r": "b"}, {"q": "c"}])
    with pytest.raises(DataError) as err:
        load_records(path, fields={"prompt": "q", "response": "r"})
    message = str(err.value)
    assert "m.jsonl:line 2" in message and "response (column 'r')" in message
    assert "missing" in message


def test_wrong_type_named(tmp_path):
    path = _write_jsonl(tmp_path / "t.jsonl", [{"text": ["not", "a", "string"]}])
    with pytest.raises(DataError, match=r"t\.jsonl:line 1, field text: must be a string, got list"):
        load_records(path)


def test_bad_messages_named(tmp_path):
    path = _write_jsonl(tmp_path / "c.jsonl", [{"messages": [{"role": "bot", "content": "x"}]}])
    with pytest.raises(DataError, match=r"line 1, field messages: messages\[0\]\.role"):
        load_records(path)


def test_tool_messages_keep_the_tool_name(tmp_path):
    chat = [{"role": "user", "content": "7*6?"},
            {"role": "assistant", "content": "<tool_call>...</tool_call>", "name": "x"},
            {"role": "tool", "name": "calculator", "content": "42", "extra": 1},
            {"role": "assistant", "content": "42"}]
    loaded = load_records(_write_jsonl(tmp_path / "t.jsonl", [{"messages": chat}]))
    assert loaded.records[0]["messages"][1:3] == [
        {"role": "assistant", "content": "<tool_call>...</tool_call>"},
        {"role": "tool", "name": "calculator", "content": "42"}]


def test_skip_mode_counts_every_bad_row(tmp_path):
    path = _write_jsonl(tmp_path / "s.jsonl", [
        {"text": "ok"}, "{oops", {"text": 3}, {"other": 1}, [1, 2], {"text": "fine"},
    ])
    loaded = load_records(path, on_error="skip", source_name="web")
    assert [r["text"] for r in loaded.records] == ["ok", "fine"]
    assert loaded.skipped == 4
    assert loaded.name == "web"
    assert loaded.errors[0].startswith(f"{path}:line 2")
    assert "line 5" in loaded.errors[3]


def test_json_list_names_record_number(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"text": "a"}, {"text": None}]))
    with pytest.raises(DataError, match=r"d\.json:record 2, field text: missing"):
        load_records(str(path))
    path.write_text(json.dumps([{"text": "a"}]))
    assert load_records(str(path)).records == [{"text": "a"}]


def test_parquet_rows(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"prompt": ["a", "b", "c"], "chosen": ["x", "y", None],
                      "rejected": ["u", "v", "w"]})
    path = str(tmp_path / "prefs.parquet")
    pq.write_table(table, path)
    with pytest.raises(DataError, match=r"prefs\.parquet:row 3, field chosen: missing"):
        load_records(path)
    loaded = load_records(path, on_error="skip")
    assert loaded.records == [
        {"prompt": "a", "chosen": "x", "rejected": "u"},
        {"prompt": "b", "chosen": "y", "rejected": "v"},
    ]
    assert loaded.skipped == 1


def test_saved_datasets_dir_and_dict_split(tmp_path):
    import datasets

    data = datasets.Dataset.from_dict({
        "messages": [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]],
    })
    data.save_to_disk(str(tmp_path / "ds"))
    loaded = load_records(str(tmp_path / "ds"))
    assert loaded.records[0]["messages"][1] == {"role": "assistant", "content": "yo"}
    datasets.DatasetDict({"train": data, "test": data}).save_to_disk(str(tmp_path / "dd"))
    assert len(load_records(str(tmp_path / "dd"), split="test").records) == 1
    with pytest.raises(DataError, match="split 'validation' not found"):
        load_records(str(tmp_path / "dd"), split="validation")


def test_hf_json_loader(tmp_path):
    path = _write_jsonl(tmp_path / "h.jsonl", [{"body": "t1"}, {"body": "t2"}])
    loaded = load_records(path, format="hf_json", fields={"text": "body"})
    assert [r["text"] for r in loaded.records] == ["t1", "t2"]


def test_unknown_inputs_are_clear(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_records(str(tmp_path / "missing.jsonl"))
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="cannot tell the format"):
        load_records(str(tmp_path / "x.csv"))
    with pytest.raises(ValueError, match="unknown canonical names"):
        load_records(str(tmp_path / "x.csv"), format="jsonl", fields={"question": "q"})


def test_kind_requirements_name_the_line(tmp_path):
    path = _write_jsonl(tmp_path / "k.jsonl", [{"prompt": "p", "response": "r"}, {"prompt": "p"}])
    with pytest.raises(DataError, match=r"k\.jsonl:line 2: a sft record needs messages or "
                                        r"prompt\+response"):
        load_records(path, kind="sft")
    assert load_records(path, kind="sft", on_error="skip").skipped == 1
