"""Slow: the chained synthetic-data recipes end to end through the real ``rlsys`` CLI (a local
Ray per process, the tiny random Llama, HF rollout engine, one learner rank).

* ``rs_sft_eval_tiny`` with an eval prompt planted in its training prompts: the planted prompt
  is decontaminated, the accepted samples feed the SFT stage, the eval stage writes its report;
* ``pairs_dpo_eval_tiny``: the pairs feed the DPO stage;
* a ``self_instruct`` stage from hand-written seeds;
* ``rlsys eval RECIPE --checkpoint tiny-llama --output X.json``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rlsys.data.sources import load_records
from rlsys.tasks.arithmetic import generate_arithmetic

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
RLSYS = str(Path(sys.executable).parent / "rlsys")


def _rlsys(*args: str, cwd: Path) -> str:
    proc = subprocess.run([RLSYS, *args], cwd=cwd, capture_output=True, text=True, timeout=840)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"rlsys {' '.join(args)} failed:\n{out[-4000:]}"
    return out


def _shares_8gram(a: str, b: str) -> bool:
    """Reference check written independently of rlsys.data.decontam."""
    def grams(text: str) -> set[str]:
        words = re.findall(r"[a-z0-9]+", text.lower())
        return {" ".join(words[i:i + 8]) for i in range(len(words) - 7)}
    return bool(grams(a) & grams(b))


def _metrics(run_dir: Path, stage: str) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("stage") == stage]


def _check_eval_report(run_dir: Path) -> None:
    report = json.loads((run_dir / "stages" / "eval" / "report.json").read_text())
    overall = report["overall"]
    assert overall["prompts"] == 4 and overall["samples"] == 16  # 4 held-out prompts, k = 4
    for key in ("pass@1", "pass@4", "maj@4"):
        assert 0.0 <= overall[key] <= 1.0
    assert overall["pass@1"] <= overall["pass@4"]


def test_rejection_sampling_then_sft_then_eval_with_a_planted_leak(tmp_path: Path) -> None:
    evals = [r["prompt"] for r in generate_arithmetic(4, split="eval")]  # the recipe's heldout
    planted = evals[1]
    train = [{"prompt": r["prompt"], "answer": r["answer"]} for r in generate_arithmetic(8)]
    train.insert(3, {"prompt": planted, "answer": "0"})
    prompts_file = tmp_path / "prompts.jsonl"
    prompts_file.write_text("".join(json.dumps(r) + "\n" for r in train))
    leaks = sum(any(_shares_8gram(r["prompt"], e) for e in evals) for r in train)
    assert leaks >= 1

    run_dir = tmp_path / "run"
    _rlsys("train", str(REPO / "configs/rs_sft_eval_tiny.yaml"), "--run-dir", str(run_dir),
           "--set", "data.sources.arith.generator=null",
           "--set", f"data.sources.arith.path={prompts_file}", cwd=tmp_path)

    data = run_dir / "synthetic" / "rs.jsonl"
    records = load_records(str(data), kind="sft").records
    assert records, "rejection sampling kept nothing"
    assert all(r["response"].strip() for r in records)
    assert planted not in {r["prompt"] for r in records}
    stats = json.loads((run_dir / "synthetic" / "rs.stats.json").read_text())
    assert stats["dropped"]["contaminated_prompt"] == leaks
    assert stats["decontaminated"] >= leaks
    assert stats["generated"] == 4 * (len(train) - leaks)  # k = 4 per clean prompt
    assert stats["kept"] == len(records)
    assert stats["kept"] + sum(v for k, v in stats["dropped"].items()
                               if k != "contaminated_prompt") == stats["generated"]
    sft_rows = _metrics(run_dir, "sft")
    assert [r["step"] for r in sft_rows] == [1, 2] and all(r["loss"] > 0 for r in sft_rows)
    state = json.loads((run_dir / "run_state.json").read_text())
    assert state["stages"]["sft"]["done"] and state["stages"]["rs"]["kept"] == len(records)
    _check_eval_report(run_dir)


def test_preference_pairs_then_dpo_then_eval(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    _rlsys("train", str(REPO / "configs/pairs_dpo_eval_tiny.yaml"), "--run-dir", str(run_dir),
           cwd=tmp_path)
    data = run_dir / "synthetic" / "pairs.jsonl"
    assert load_records(str(data), kind="pair").records
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    for row in rows:
        assert row["chosen"] != row["rejected"]
        assert row["margin"] >= 0.5
        assert row["margin"] == pytest.approx(row["chosen_score"] - row["rejected_score"])
    stats = json.loads((run_dir / "synthetic" / "pairs.stats.json").read_text())
    assert stats["kept"] == len(rows) and stats["generated"] == 8 * 4
    dpo_rows = _metrics(run_dir, "dpo")
    assert [r["step"] for r in dpo_rows] == [1, 2]
    _check_eval_report(run_dir)


def test_self_instruct_stage(tmp_path: Path) -> None:
    seeds = ["Write a short poem about the sea.", "List three uses of a paperclip.",
             "Explain why the sky is blue.", "Give a synonym for happy.",
             "Translate good morning into Spanish.", "Describe your favourite meal."]
    (tmp_path / "seeds.jsonl").write_text("".join(json.dumps({"prompt": s}) + "\n"
                                                  for s in seeds))
    recipe = {
        "name": "self_instruct_tiny", "model": {"path": "tiny-llama"},
        "data": {"sources": [
            {"name": "seeds", "path": str(tmp_path / "seeds.jsonl"), "kind": "prompt"},
            {"name": "heldout", "generator": "arithmetic",
             "generator_kwargs": {"num": 4, "split": "eval"}, "kind": "prompt",
             "split": "eval"}]},
        "rollout": {"engine": "hf", "num_workers": 1, "max_new_tokens": 16},
        "reward": {"type": "format"},
        "logging": {"tensorboard": False, "progress": False, "plot": False},
        "stages": [{"name": "si", "kind": "self_instruct", "sources": ["seeds"],
                    "generate": {"output": "si.jsonl", "k": 2, "num_prompts": 4,
                                 "temperature": 1.0, "max_new_tokens": 16, "min_words": 2}}],
    }
    path = tmp_path / "si.yaml"
    path.write_text(yaml.safe_dump(recipe))
    run_dir = tmp_path / "run"
    out = _rlsys("train", str(path), "--run-dir", str(run_dir), cwd=tmp_path)
    assert "[si] self_instruct: 8 generated" in out
    records = load_records(str(run_dir / "si.jsonl"), kind="sft").records
    assert records and all(r["prompt"] not in seeds for r in records)
    assert len({r["prompt"] for r in records}) == len(records)
    stats = json.loads((run_dir / "si.stats.json").read_text())
    assert stats["generated"] == 8 and stats["kept"] == len(records)


def test_eval_command_prints_and_writes_the_report(tmp_path: Path) -> None:
    output = tmp_path / "report.json"
    out = _rlsys("eval", str(REPO / "configs/rs_sft_eval_tiny.yaml"), "--checkpoint",
                 "tiny-llama", "--output", str(output), cwd=tmp_path)
    header = next(line for line in out.splitlines() if line.startswith("source"))
    assert header.split()[1:5] == ["prompts", "pass@1", "pass@4", "maj@4"]
    assert any(line.startswith("heldout") for line in out.splitlines())
    report = json.loads(output.read_text())
    assert set(report["sources"]) == {"heldout"}
    for key in ("pass@1", "pass@4", "maj@4", "mean_length", "truncation_rate"):
        assert key in report["overall"]
    assert report["overall"]["samples"] == 16
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.jsonl"))
