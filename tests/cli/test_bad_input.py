"""Bad input to the real ``rlsys`` CLI: exit 2, one stderr line naming the file/line/field, no
traceback -- for ``validate`` and, where the input is only read at run time, for ``train``
(which checks the model, data and reward before Ray starts, so these cases take a second)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

BASE = {
    "name": "bad",
    "model": {"path": "tiny-llama"},
    "data": {"sources": [{"name": "d", "path": "good.jsonl", "kind": "prompt"}]},
    "reward": {"type": "math"},
    "rollout": {"n": 2, "prompts_per_step": 2, "max_new_tokens": 4},
    "stages": [{"name": "grpo", "kind": "grpo", "steps": 1}],
}
GOOD_ROWS = [{"prompt": "1+1?", "answer": "2"}, {"prompt": "2+2?", "answer": "4"}]


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("rlsys")  # the installed console script
    return [str(script)] if script.exists() else [sys.executable, "-m", "rlsys.cli"]


def _source(**changes) -> dict:
    return {"data": {"sources": [{**BASE["data"]["sources"][0], **changes}]}}


def _jsonl(*rows) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n"
                    for r in rows)


# id -> (recipe changes, extra files, raw recipe bytes or None, words the one line must hold)
CASES = {
    "unknown_field": ({"stages": [{"name": "grpo", "kind": "grpo", "stepz": 1}]}, {}, None,
                      ["stages.0.stepz"]),
    "unknown_reward": ({"reward": {"type": "maths"}}, {}, None, ["reward.type", "'maths'"]),
    "reward_kwarg_typo": ({"reward": {"type": "math", "kwargs": {"timout": 5}}}, {}, None,
                          ["reward.kwargs", "timout", "accepted: timeout"]),
    "weighted_component_kwarg_typo": (
        {"reward": {"type": "weighted", "kwargs": {"components": [
            {"name": "format", "kwargs": {"patern": "x"}}]}}}, {}, None,
        ["reward.kwargs.components.0.kwargs", "patern"]),
    "bad_regex": ({"reward": {"type": "format", "kwargs": {"pattern": "(["}}}, {}, None,
                  ["reward.kwargs", "invalid pattern"]),
    "unknown_model": ({"model": {"path": "gpt-17"}}, {}, None, ["model.path", "gpt-17"]),
    "missing_model_dir": ({"model": {"path": "./no-model"}}, {}, None,
                          ["model.path", "no-model"]),
    "missing_data_file": (_source(path="nope.jsonl"), {}, None,
                          ["data.sources.0.path", "nope.jsonl", "no such file"]),
    "non_utf8_data": (_source(path="latin.jsonl"),
                      {"latin.jsonl": _jsonl(GOOD_ROWS[0],
                                             b'{"prompt": "caf\xe9", "answer": "1"}')},
                      None, ["data.sources.0.path", "latin.jsonl:line 2", "not UTF-8"]),
    "empty_data_file": (_source(path="empty.jsonl"), {"empty.jsonl": b""}, None,
                        ["data.sources.0.path", "empty.jsonl", "empty"]),
    "blank_lines_file": (_source(path="blank.jsonl"), {"blank.jsonl": b"\n  \n\n"}, None,
                         ["data.sources.0.path", "blank.jsonl", "no records"]),
    "row_without_prompt": (_source(path="q.jsonl"),
                           {"q.jsonl": _jsonl({"question": "1+1?", "answer": "2"})}, None,
                           ["q.jsonl:line 1", "needs prompt"]),
    "row_missing_mapped_field": (
        _source(path="m.jsonl", fields={"prompt": "question", "answer": "answer"}),
        {"m.jsonl": _jsonl({"question": "1+1?", "answer": "2"}, {"question": "2+2?"})}, None,
        ["m.jsonl:line 2", "field answer", "missing"]),
    "every_row_skipped": (
        _source(path="s.jsonl", on_error="skip"),
        {"s.jsonl": _jsonl({"question": "1+1?"}, {"question": "2+2?"})}, None,
        ["s.jsonl", "all 2 rows are malformed", "line 1"]),
    "unreadable_parquet": (_source(path="b.parquet"), {"b.parquet": b"not parquet"}, None,
                           ["data.sources.0.path", "b.parquet", "not a readable Parquet file"]),
    "bad_json_line": (_source(path="j.jsonl"), {"j.jsonl": _jsonl(GOOD_ROWS[0], b'{"prompt": ')},
                      None, ["j.jsonl:line 2", "invalid JSON"]),
    "generator_kwarg_typo": ({"data": {"sources": [{"name": "g", "generator": "arithmetic",
                                                    "generator_kwargs": {"nun": 3},
                                                    "kind": "prompt"}]}}, {}, None,
                             ["data.sources.0.generator_kwargs", "nun"]),
    "format_hf": (_source(format="hf"), {}, None, ["data.sources.0.format", "hf_disk"]),
    "unknown_fields_key": (_source(fields={"question": "q"}), {}, None,
                           ["data.sources.0", "unknown canonical name", "question"]),
    "max_staleness": ({"stages": [{"name": "grpo", "kind": "grpo",
                                   "algo": {"async_rollout": True, "max_staleness": 2}}]}, {},
                      None, ["stages.0.algo", "max_staleness", "set tis_cap"]),
    "eval_every": ({"stages": [{"name": "grpo", "kind": "grpo", "eval_every": 2}]}, {}, None,
                   ["stages.0", "eval_every", "not supported"]),
    "rl_batch_size": ({"stages": [{"name": "grpo", "kind": "grpo", "batch_size": 4}]}, {}, None,
                      ["stages.0", "batch_size", "rollout.prompts_per_step"]),
    "missing_recipe": (None, {}, None, ["nope.yaml", "file not found"]),
    "non_utf8_recipe": (None, {}, b"name: caf\xe9\nstages: []\n",
                        ["recipe.yaml", "line 1", "not UTF-8"]),
    "bad_yaml": (None, {}, b"name: bad\nstages: [\n", ["recipe.yaml", "line 3", "not valid YAML"]),
}
# Inputs first read at run time: ``train`` must catch them up front too.
TRAIN_CASES = ["reward_kwarg_typo", "bad_regex", "unknown_model", "missing_data_file",
               "non_utf8_data", "empty_data_file", "row_without_prompt", "every_row_skipped",
               "generator_kwarg_typo", "non_utf8_recipe"]


def _prepare(tmp_path: Path, case: str) -> str:
    changes, files, raw, _ = CASES[case]
    (tmp_path / "good.jsonl").write_bytes(_jsonl(*GOOD_ROWS))
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    if case == "missing_recipe":
        return "nope.yaml"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_bytes(raw if raw is not None else yaml.safe_dump({**BASE, **changes}).encode())
    return "recipe.yaml"


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RLSYS_CACHE": str(tmp_path / "cache")}  # a model is never built here
    return subprocess.run([*_cli(), *args], cwd=tmp_path, capture_output=True, text=True,
                          env=env, timeout=300)


def _assert_one_clean_line(out: subprocess.CompletedProcess, command: str, words: list[str]):
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr, out.stderr
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"rlsys {command}: error: "), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])


def test_base_recipe_is_valid(tmp_path):
    recipe = _prepare(tmp_path, "unknown_field")
    (tmp_path / recipe).write_text(yaml.safe_dump(BASE))
    out = _run(tmp_path, "validate", recipe)
    assert out.returncode == 0, out.stderr
    assert not (tmp_path / "cache").exists()  # validate checks the model name, builds nothing


@pytest.mark.parametrize("case", sorted(CASES))
def test_validate_bad_input(tmp_path, case):
    recipe = _prepare(tmp_path, case)
    _assert_one_clean_line(_run(tmp_path, "validate", recipe), "validate", CASES[case][3])


@pytest.mark.parametrize("case", TRAIN_CASES)
def test_train_bad_input_fails_before_ray(tmp_path, case):
    recipe = _prepare(tmp_path, case)
    out = _run(tmp_path, "train", recipe, "--run-dir", "run")
    _assert_one_clean_line(out, "train", CASES[case][3])
    assert not (tmp_path / "run").exists()  # nothing started


def test_bad_override_is_one_line(tmp_path):
    recipe = _prepare(tmp_path, "unknown_field")
    (tmp_path / recipe).write_text(yaml.safe_dump(BASE))
    out = _run(tmp_path, "validate", recipe, "--set", "stages.zz.steps=2")
    _assert_one_clean_line(out, "validate", ["--set", "stages.zz", "no list item"])


def test_unexpected_errors_keep_their_traceback(tmp_path):
    """Only user errors are shortened: a bug (here: a reward whose constructor crashes with
    an error that is not a user error) still shows its traceback and exits 1."""
    plugin = tmp_path / "crashing_reward.py"
    plugin.write_text("class Crash:\n    def __init__(self):\n        raise RuntimeError('bug')\n")
    recipe = _prepare(tmp_path, "unknown_field")
    (tmp_path / recipe).write_text(yaml.safe_dump(BASE))
    script = ("import sys; sys.path.insert(0, '.'); import rewards, crashing_reward; "
              "rewards.register_reward('crash', crashing_reward.Crash); "
              "from rlsys.cli import main; sys.exit(main(sys.argv[1:]))")
    out = subprocess.run([sys.executable, "-c", script, "validate", recipe, "--set",
                          "reward.type=crash"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 1 and "Traceback" in out.stderr and "RuntimeError: bug" in out.stderr


def test_eval_unknown_checkpoint_is_one_line(tmp_path):
    recipe = _prepare(tmp_path, "unknown_field")
    (tmp_path / recipe).write_text(yaml.safe_dump(BASE))
    out = _run(tmp_path, "eval", recipe, "--checkpoint", "./runs/x/final")
    _assert_one_clean_line(out, "eval", ["runs/x/final", "does not exist"])
