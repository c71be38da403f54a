"""Run bookkeeping: the run state file survives restarts, the summary line has the promised
shape, local Ray gets enough logical CPUs for the recipe's actors."""

from pathlib import Path

from rlsys.config import recipe_from_dict
from rlsys.controller.context import local_cpus_needed, resolve_run_dir
from rlsys.controller.runner import RunState, accuracy_summary


def test_run_state_roundtrip(tmp_path):
    state = RunState(tmp_path / "run_state.json")
    assert state.done("sft") is None
    state.finish("sft", "/x/final", {"loss": 1.0})
    state.add_eval("base", {"accuracy": 0.07, "correct": 7, "total": 100})
    state.add_eval("base", {"accuracy": 0.08, "correct": 8, "total": 100})
    again = RunState(tmp_path / "run_state.json")
    assert again.done("sft") == "/x/final"
    assert again.eval_result("base")["accuracy"] == 0.08 and len(again.data["evals"]) == 1


def test_accuracy_summary_line(tmp_path):
    state = RunState(tmp_path / "s.json")
    for label, acc in [("base", 0.07), ("sft", 0.35), ("grpo", 0.42)]:
        state.add_eval(label, {"accuracy": acc})
    line = accuracy_summary(state, ["base", "sft", "grpo"], Path("/r"))
    assert line == "held-out accuracy: 0.07 -> 0.35 (sft) -> 0.42 (grpo) (run dir: /r)"


def _recipe(**learner):
    return recipe_from_dict({
        "name": "t", "learner": learner,
        "data": {"sources": [{"name": "a", "generator": "arithmetic", "kind": "prompt"}]},
        "stages": [{"name": "p", "kind": "ppo", "algo": {"kl_coef": 0.1}}]})


def test_local_cpus_cover_policy_reference_critic_and_rollout():
    # 2 ranks x (policy + reference + critic) + 1 rollout worker = 7 logical CPUs
    assert local_cpus_needed(_recipe(num_ranks=2)) >= 7


def test_run_dir_template():
    assert resolve_run_dir(_recipe(), None).name == "t"
    assert str(resolve_run_dir(_recipe(), "/tmp/x")) == "/tmp/x"


def test_every_schedule_gets_the_arguments_it_needs():
    from learner.schedules import build_lr_lambda
    from rlsys.controller.learners import learner_kwargs

    for name in ("constant", "cosine", "rewarm", "wsd"):
        recipe = _recipe(schedule={"name": name, "warmup_steps": 1})
        kw = learner_kwargs(recipe, "tiny-llama", total_steps=10)
        lam = build_lr_lambda(kw["schedule"], total_steps=10, **kw["schedule_kwargs"])
        assert 0.0 <= lam(5) <= 1.0, name


def test_schedule_kwargs_are_checked_at_load():
    import pytest

    from rlsys.config import RecipeError

    with pytest.raises(RecipeError, match="takes no"):
        _recipe(schedule={"name": "cosine", "kwargs": {"decay_steps": 3}})
    with pytest.raises(RecipeError, match="warmup_steps >= 1"):
        _recipe(schedule={"name": "rewarm"})


def test_rollout_threads_follow_the_cpu_reservation(tmp_path):
    from rlsys.controller.context import RunContext

    def engine_kwargs(**rollout):
        recipe = recipe_from_dict({
            "name": "t", "rollout": rollout,
            "data": {"sources": [{"name": "a", "generator": "arithmetic", "kind": "prompt"}]},
            "stages": [{"name": "p", "kind": "grpo"}]})
        return RunContext(recipe, tmp_path, start_ray=False)._engine_kwargs()

    assert engine_kwargs(num_cpus_per_worker=2)["num_threads"] == 2
    assert engine_kwargs(num_cpus_per_worker=0.5)["num_threads"] == 1
    assert engine_kwargs(engine_kwargs={"num_threads": 3})["num_threads"] == 3
    assert "num_threads" not in engine_kwargs(engine="vllm", num_cpus_per_worker=2)
    assert "num_threads" not in engine_kwargs(num_gpus_per_worker=1)
