"""The environment contract: registry, entry points, Protocol, concurrent steps, recipe env:."""

from __future__ import annotations

import threading
from importlib.metadata import EntryPoint

import pytest

from rlsys.config.env import EnvConfig
from rlsys.config.load import RecipeError, recipe_from_dict
from rlsys.envs import ENVS, Environment, StepResult, env_names, get_env, step_many


class CountdownEnv:
    """Done after ``turns`` steps; the reward is the number of steps whose text was "yes"."""

    def __init__(self, turns: int = 2, barrier: threading.Barrier | None = None) -> None:
        self.turns, self.barrier = turns, barrier
        self.yes, self.left = 0, 0

    def reset(self, record):
        self.yes, self.left = 0, self.turns
        return [{"role": "user", "content": record["prompt"]}]

    def step(self, assistant_text):
        if self.barrier is not None:  # every env must be inside step() at once
            self.barrier.wait()
        self.left -= 1
        self.yes += assistant_text == "yes"
        done = self.left == 0
        obs = [] if done else [{"role": "user", "content": f"{self.left} left"}]
        return StepResult(obs, float(self.yes), done, {"thread": threading.get_ident()})

    def close(self):
        pass


def test_builtins_are_registered_and_satisfy_the_protocol():
    assert {"tool_math", "code_repair"} <= set(env_names())
    for name in ("tool_math", "code_repair"):
        env = get_env(name)
        assert isinstance(env, Environment)
        env.close()
    with pytest.raises(KeyError, match="unknown environment 'nope'; known: code_repair"):
        get_env("nope")


def test_entry_point_environments_are_found(monkeypatch):
    ep = EntryPoint("countdown_ep", f"{__name__}:CountdownEnv", "rlsys.envs")
    monkeypatch.setattr("importlib.metadata.entry_points",
                        lambda group: [ep] if group == "rlsys.envs" else [])
    monkeypatch.setattr(ENVS, "_groups_loaded", set())
    try:
        assert "countdown_ep" in env_names()
        env = get_env("countdown_ep", turns=1)
        env.reset({"prompt": "go"})
        assert isinstance(env, CountdownEnv)
        result = env.step("yes")
        assert (result.reward, result.done) == (1.0, True)
    finally:
        ENVS._items.pop("countdown_ep", None)


def test_an_episode_follows_the_contract():
    env = CountdownEnv(turns=2)
    assert env.reset({"prompt": "say yes"}) == [{"role": "user", "content": "say yes"}]
    first = env.step("yes")
    assert (first.observation, first.reward, first.done) == (
        [{"role": "user", "content": "1 left"}], 1.0, False)
    second = env.step("no")
    assert (second.observation, second.reward, second.done) == ([], 1.0, True)


def test_step_many_steps_environments_concurrently_in_order():
    barrier = threading.Barrier(4, timeout=60)
    group = [CountdownEnv(turns=1, barrier=barrier) for _ in range(4)]
    for env in group:
        env.reset({"prompt": "p"})
    results = step_many(group, ["yes", "no", "yes", "no"])
    assert [r.reward for r in results] == [1.0, 0.0, 1.0, 0.0]
    assert len({r.info["thread"] for r in results}) == 4
    with pytest.raises(ValueError, match="2 environments but 1 texts"):
        step_many(group[:2], ["x"])


def test_env_config_checks_the_registry_and_caps():
    cfg = EnvConfig(type="code_repair", kwargs={"max_attempts": 2})
    assert (cfg.max_turns, cfg.max_tokens_per_turn, cfg.max_total_tokens) == (4, 512, 2048)
    with pytest.raises(ValueError, match="unknown environment 'nope'"):
        EnvConfig(type="nope")
    with pytest.raises(ValueError, match="exceeds max_total_tokens"):
        EnvConfig(type="tool_math", max_tokens_per_turn=100, max_total_tokens=50)
    with pytest.raises(ValueError, match="Extra inputs"):
        EnvConfig(type="tool_math", turns=3)


def test_a_recipe_with_env_refuses_what_cannot_run_multi_turn():
    recipe = {"name": "t", "stages": [{"name": "g", "kind": "grpo", "steps": 1}]}
    assert recipe_from_dict(recipe).env is None
    assert recipe_from_dict({**recipe, "env": {"type": "tool_math"}}).env.type == "tool_math"
    with pytest.raises(RecipeError, match="r.yaml: env.type: unknown environment 'x'"):
        recipe_from_dict({**recipe, "env": {"type": "x"}}, "r.yaml")
    shaped = {"name": "g", "kind": "grpo", "steps": 1, "algo": {"overlong_buffer": 8}}
    with pytest.raises(RecipeError) as err:
        recipe_from_dict({**recipe, "stages": [shaped], "env": {"type": "tool_math"}}, "r.yaml")
    assert str(err.value).startswith("r.yaml: stages.0.algo.overlong_buffer: overlong shaping "
                                     "is single-turn only")
    chunked = {"name": "g", "kind": "grpo", "steps": 1,
               "algo": {"async_rollout": True, "partial_rollout_chunk": 8}}
    with pytest.raises(RecipeError, match="r.yaml: stages.0.algo.partial_rollout_chunk: with "
                                          "'env:' async episodes load new weights between turns"):
        recipe_from_dict({**recipe, "stages": [chunked], "env": {"type": "tool_math"}}, "r.yaml")
    asynchronous = {"name": "g", "kind": "grpo", "steps": 1, "algo": {"async_rollout": True}}
    assert recipe_from_dict({**recipe, "stages": [asynchronous],
                             "env": {"type": "tool_math"}}).stages[0].algo.async_rollout
    data = {"sources": [{"name": "p", "generator": "tool_math", "kind": "prompt"}]}
    sampling = {"name": "pp", "kind": "preference_pairs", "steps": 1,
                "generate": {"output": "rs.jsonl", "k": 2}}
    with pytest.raises(RecipeError, match="stages.0.kind: 'preference_pairs' stages do not "
                                          "run multi-turn episodes"):
        recipe_from_dict({**recipe, "data": data, "stages": [sampling],
                          "env": {"type": "tool_math"}}, "r.yaml")
