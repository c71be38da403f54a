"""``logging.trackers`` with the real libraries, no network: MLflow's local file store and W&B
in offline mode. A stage logs steps 1..3, "crashes", resumes from a step-2 checkpoint and
finishes at 4; what each tracker holds is read back (MLflow client / the offline ``.wandb``
file) and compared with ``metrics.jsonl``: the same numbers at the same steps, each step
once, the resolved recipe, and the final model path."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from rlsys.config import RecipeError, load_recipe
from rlsys.controller.metrics import read_metrics, stage_logger
from rlsys.controller.trackers import flatten, scalars_of

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def offline_env(monkeypatch, tmp_path):
    """W&B offline with its config/cache dirs in ``tmp_path``; MLflow's file store allowed."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home" / var.lower()))
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def _context(tmp_path: Path, *overrides: str) -> SimpleNamespace:
    """What ``stage_logger`` reads of a ``RunContext``: the recipe and the run dir."""
    recipe = load_recipe(REPO / "configs" / "sft_tiny.yaml", ["logging.progress=false",
                                                              *overrides])
    return SimpleNamespace(recipe=recipe, run_dir=tmp_path / "run")


def _run_with_resume(ctx: SimpleNamespace, final_model: Path) -> list[dict]:
    stage = ctx.recipe.stages[0]
    first = stage_logger(ctx, stage)
    for step in (1, 2, 3):
        first.log(step, {"loss": 1.0 / step, "lr": 1e-3 * step, "tokens": 100 + step})
    first.close()  # stands for the driver dying after step 3; the checkpoint is at step 2
    resumed = stage_logger(ctx, stage, start_step=2)
    for step in (3, 4):
        resumed.log(step, {"loss": 0.1 / step, "lr": 2e-3 * step, "tokens": 200 + step})
    final_model.mkdir()
    (final_model / "config.json").write_text("{}")
    resumed.close(final_model=str(final_model))
    rows = read_metrics(ctx.run_dir / "metrics.jsonl", stage.name)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    return rows


def test_mlflow_run_matches_metrics_jsonl(offline_env, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = (tmp_path / "mlruns").as_uri()
    ctx = _context(tmp_path, "logging.trackers=[mlflow]", f"logging.mlflow_tracking_uri={uri}",
                   "logging.project=rlsys-test")
    rows = _run_with_resume(ctx, tmp_path / "final")
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("rlsys-test")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time"])
    assert len(runs) == 2  # the interrupted run and the resumed one
    run = runs[-1]
    assert run.info.status == "FINISHED"
    stage = ctx.recipe.stages[0].name
    assert run.info.run_name == f"{ctx.recipe.name}/{stage}"
    for key in ("loss", "lr", "tokens"):
        history = client.get_metric_history(run.info.run_id, key)
        assert sorted((m.step, m.value) for m in history) == [(r["step"], float(r[key]))
                                                              for r in rows]
        assert sorted(m.timestamp for m in history) == [int(r["time"] * 1000) for r in rows]
    params = run.data.params
    expected = flatten(ctx.recipe.model_dump(mode="json"))
    assert params[f"stages.{stage}.steps"] == str(ctx.recipe.stages[0].steps)
    assert params["logging.trackers"] == "['mlflow']"
    assert set(params) == set(expected)
    recipe_file = client.download_artifacts(run.info.run_id, "recipe.yaml", str(tmp_path))
    assert yaml.safe_load(Path(recipe_file).read_text()) == ctx.recipe.model_dump(mode="json")
    assert run.data.tags["rlsys.final_model"] == str(tmp_path / "final")
    ref = client.download_artifacts(run.info.run_id, "final_model.json", str(tmp_path))
    assert json.loads(Path(ref).read_text()) == {"final_model": str(tmp_path / "final")}


def _wandb_records(path: Path) -> list:
    """The protobuf records of an offline ``.wandb`` file (a LevelDB-style log: a 7-byte
    header, then 32 KiB blocks of ``crc32 | length (u16 LE) | type`` chunks; types 1 = full,
    2/3/4 = first/middle/last piece of a record)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, buf, out, block = 7, b"", [], 32768
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if pos + 7 + length > len(data):  # a record still being written
            break
        buf += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            out.append(record)
            buf = b""
    return out


def _finished_wandb_runs(wandb_dir: Path, timeout_s: float = 60.0) -> list[list]:
    """The records of every offline run under ``wandb_dir``, once each file holds its ``exit``
    record (W&B's service process writes the file; ``run.finish()`` may return first)."""
    deadline = time.monotonic() + timeout_s
    while True:
        runs = [_wandb_records(f) for f in sorted(wandb_dir.glob("offline-run-*/run-*.wandb"))]
        done = all(any(r.WhichOneof("record_type") == "exit" for r in recs) for recs in runs)
        if done or time.monotonic() > deadline:
            return runs
        time.sleep(0.2)


def test_wandb_offline_run_matches_metrics_jsonl(offline_env, tmp_path):
    ctx = _context(tmp_path, "logging.trackers=[wandb]")
    rows = _run_with_resume(ctx, tmp_path / "final")
    runs = _finished_wandb_runs(ctx.run_dir / "wandb")
    assert len(runs) == 2  # the interrupted run and the resumed one
    (records,) = [recs for recs in runs if any(r.WhichOneof("record_type") == "artifact"
                                               for r in recs)]
    kinds = [r.WhichOneof("record_type") for r in records]
    (run,) = [r.run for r, k in zip(records, kinds, strict=True) if k == "run"]
    assert run.display_name == f"{ctx.recipe.name}/{ctx.recipe.stages[0].name}"
    config = {i.key: json.loads(i.value_json) for i in run.config.update if i.key != "_wandb"}
    assert config == ctx.recipe.model_dump(mode="json")
    history = []
    for r, k in zip(records, kinds, strict=True):
        if k == "history":
            items = {i.key or "/".join(i.nested_key): json.loads(i.value_json)
                     for i in r.history.item}
            history.append({k: v for k, v in items.items() if not k.startswith("_")}
                           | {"step": r.history.step.num})
    assert history == [{"step": r["step"], **scalars_of(r)} for r in rows]
    (artifact,) = [r.artifact for r, k in zip(records, kinds, strict=True) if k == "artifact"]
    assert artifact.type == "model"
    refs = {m.path: m.ref for m in artifact.manifest.contents}
    assert refs == {"model/config.json": (tmp_path / "final" / "config.json").as_uri()}


def test_mlflow_file_store_refusal_names_the_setting(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ctx = _context(tmp_path, "logging.trackers=[mlflow]")
    with pytest.raises(RecipeError, match=r"logging.mlflow_tracking_uri: MLflow cannot use "
                                          r".*MLFLOW_ALLOW_FILE_STORE=true"):
        stage_logger(ctx, ctx.recipe.stages[0])


def test_tracker_config_rules():
    base = REPO / "configs" / "sft_tiny.yaml"
    assert load_recipe(base).logging.trackers == ["tensorboard"]
    assert load_recipe(base, ["logging.tensorboard=false"]).logging.trackers == []
    # the older switch adds or removes tensorboard from whatever trackers say
    assert load_recipe(base, ["logging.trackers=[mlflow, tensorboard]",
                              "logging.tensorboard=false"]).logging.trackers == ["mlflow"]
    assert load_recipe(base, ["logging.trackers=[wandb]", "logging.tensorboard=true"]
                       ).logging.tensorboard
    for bad, message in ((["logging.trackers=[wandb, wandb]"], "names a tracker twice"),
                         (["logging.trackers=[comet]"], "logging.trackers"),
                         (["logging.tensorboard=maybe"], "must be true or false")):
        with pytest.raises(RecipeError, match=message):
            load_recipe(base, bad)


def test_importing_rlsys_does_not_import_the_tracker_libraries():
    code = ("import sys, rlsys, rlsys.controller.metrics, rlsys.controller.trackers; "
            "print(sorted(m for m in ('wandb', 'mlflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, check=True).stdout
    assert out.strip() == "[]"
