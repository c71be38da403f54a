"""``rlsys.config.checks``: the model, data files and reward arguments a valid recipe points
at, checked without building a model or starting Ray; and the one user-error base class."""

from __future__ import annotations

import json

import pytest

from rlsys.config import RecipeError, recipe_from_dict
from rlsys.config.checks import check_inputs, input_errors
from rlsys.data.sources import DataError, load_records
from rlsys.errors import UserError
from rlsys.modeling.resolve import ModelError, ModelPathError, check_model


def _recipe(tmp_path, **sections):
    data = {"name": "t", "model": {"path": "tiny-llama"},
            "data": {"sources": [{"name": "a", "generator": "arithmetic", "kind": "prompt"}]},
            "stages": [{"name": "grpo", "kind": "grpo"}], **sections}
    return recipe_from_dict(data)


def test_user_errors_share_one_base():
    for cls in (RecipeError, DataError, ModelError, ModelPathError):
        assert issubclass(cls, UserError)
    assert issubclass(ModelError, ValueError) and issubclass(ModelPathError, FileNotFoundError)


def test_check_model_builds_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("RLSYS_CACHE", str(tmp_path / "cache"))
    spec, arg = check_model("tiny-llama:3")
    assert spec.key == "tiny-llama" and arg == "3"
    assert not (tmp_path / "cache").exists()
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    assert check_model(str(tmp_path / "m")) == (None, str(tmp_path / "m"))
    with pytest.raises(ModelError, match="known short names: .*tiny-llama"):
        check_model("gpt-17")
    with pytest.raises(ModelPathError, match="no config.json"):
        check_model(str(tmp_path))


def test_good_recipe_has_no_errors(tmp_path):
    assert input_errors(_recipe(tmp_path, reward={"type": "format",
                                                  "kwargs": {"pattern": "a+"}})) == []


@pytest.mark.parametrize("reward,path,words", [
    ({"type": "math", "kwargs": {"timout": 1}}, "reward.kwargs", ["'timout'", "timeout"]),
    ({"type": "format", "kwargs": {"pattern": "(["}}, "reward.kwargs", ["invalid pattern"]),
    ({"type": "math", "kwargs": {"timeout": -1}}, "reward.kwargs", ["timeout must be > 0"]),
    ({"type": "model", "kwargs": {"pth": "x"}}, "reward.kwargs", ["'pth'", "path"]),
    ({"type": "weighted", "kwargs": {"components": [{"name": "nope"}]}},
     "reward.kwargs.components.0.name", ["unknown reward 'nope'"]),
    ({"type": "weighted", "kwargs": {"components": [
        {"name": "math", "weight": 1.0, "kwargs": {"bonus": 1}}]}},
     "reward.kwargs.components.0.kwargs", ["'bonus'", "format_bonus"]),
])
def test_reward_arguments_are_checked(tmp_path, reward, path, words):
    errors = input_errors(_recipe(tmp_path, reward=reward))
    assert [p for p, _ in errors] == [path], errors
    for word in words:
        assert word in errors[0][1], errors


def test_model_reward_is_not_built(tmp_path):
    """A reward model's kwargs are checked against the signature only (building loads it)."""
    reward = {"type": "model", "kwargs": {"path": str(tmp_path / "not-yet-trained")}}
    assert input_errors(_recipe(tmp_path, reward=reward)) == []


def test_data_files_are_read_with_their_kind(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"prompt": "p", "answer": "1"}) + "\n")
    sft = tmp_path / "sft.jsonl"
    sft.write_text(json.dumps({"prompt": "p"}) + "\n")
    later = "{run_dir}/synthetic/pairs.jsonl"  # written by an earlier stage: not checked
    recipe = _recipe(tmp_path, data={"sources": [
        {"name": "ok", "path": str(good), "kind": "prompt"},
        {"name": "sft", "path": str(sft), "kind": "sft"},
        {"name": "later", "path": later, "kind": "pair"},
        {"name": "gen", "generator": "arithmetic", "generator_kwargs": {"num": 0}}]})
    errors = input_errors(recipe)
    assert [p for p, _ in errors] == ["data.sources.1.path", "data.sources.3.generator_kwargs"]
    assert "sft.jsonl:line 1" in errors[0][1] and "prompt+response" in errors[0][1]
    assert "num must be >= 1, got 0" in errors[1][1]
    with pytest.raises(RecipeError) as info:
        check_inputs(recipe, "r.yaml")
    assert str(info.value).splitlines()[0].startswith("r.yaml: data.sources.1.path: ")


def test_unknown_model_named(tmp_path):
    errors = input_errors(_recipe(tmp_path, model={"path": "llama-9000"}))
    assert errors[0][0] == "model.path" and "llama-9000" in errors[0][1]


@pytest.mark.parametrize("content,words", [
    (b"", ["no records", "empty"]),
    (b"\n   \n\n", ["no records", "blank lines"]),
    (b'{"text": "a"}\n{"text": "caf\xe9"}\n', ["line 2", "not UTF-8", "0xe9", "column 14"]),
])
def test_load_records_names_file_and_line(tmp_path, content, words):
    path = tmp_path / "d.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError) as info:
        load_records(str(path))
    message = str(info.value)
    assert message.startswith(f"{path}:") and "\n" not in message
    for word in words:
        assert word in message, message


def test_json_file_non_utf8_and_empty_list(tmp_path):
    path = tmp_path / "d.json"
    path.write_bytes(b'[{"text": "a"},\n {"text": "\xff"}]')
    with pytest.raises(DataError, match=r"d\.json:line 2: not UTF-8 text \(byte 0xff at column 12"):
        load_records(str(path))
    path.write_text("[]")
    with pytest.raises(DataError, match="no records"):
        load_records(str(path))


def test_all_rows_skipped_is_an_error_but_some_are_counted(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"question": "q"}\n{"prompt": "p"}\n')
    loaded = load_records(str(path), kind="prompt", on_error="skip")
    assert loaded.records == [{"prompt": "p"}] and loaded.skipped == 1
    path.write_text('{"question": "q"}\n')
    with pytest.raises(DataError, match=r"all 1 rows are malformed \(first: .*line 1"):
        load_records(str(path), kind="prompt", on_error="skip")


def test_prompt_answer_rows_declared_sft_get_a_hint(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_text('{"prompt": "1+1?", "answer": "2"}\n')
    with pytest.raises(DataError, match=r"e\.jsonl:line 1: a sft record needs .*kind prompt"):
        load_records(str(path), kind="sft")
    assert load_records(str(path), kind="prompt").records == [{"prompt": "1+1?", "answer": "2"}]


def test_unreadable_parquet_is_a_data_error(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"this is not parquet at all")
    with pytest.raises(DataError, match=r"broken\.parquet: not a readable Parquet file"):
        load_records(str(path))
