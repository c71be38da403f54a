"""The reward registry: built-in names, unknown names, plain callables, entry points."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

import rewards
from rewards import FunctionReward, get_reward, register_reward, reward_names
from rewards.base import Reward, RewardItem

ROOT = Path(__file__).resolve().parents[2]


def test_builtins_are_known_and_unknown_names_list_them() -> None:
    assert {"math", "code", "format", "model", "remote", "weighted"} <= set(reward_names())
    with pytest.raises(KeyError) as info:
        get_reward("definitely-not-a-reward")
    assert "definitely-not-a-reward" in str(info.value)
    for name in ("math", "code", "format", "weighted"):
        assert name in str(info.value)


def test_plain_callable_is_adapted() -> None:
    name = f"len-{uuid.uuid4().hex[:8]}"
    register_reward(name, lambda prompt, response, reference: len(response) + (reference or 0))
    reward = get_reward(name)
    assert isinstance(reward, FunctionReward) and isinstance(reward, Reward)
    assert reward.name == name
    scores = reward.score([RewardItem("p", "abc", 1), RewardItem("p", "abc", "x")])
    assert scores[0].value == 4.0
    assert scores[1].value is None and "TypeError" in scores[1].error  # one bad item only
    with pytest.raises(ValueError, match="already registered"):
        register_reward(name, len)


def test_classes_and_marked_factories_are_used_as_is() -> None:
    class Constant:
        name, version = "constant", "1"

        def __init__(self, value: float = 1.0) -> None:
            self.value = value

    def factory(**kwargs: object) -> Constant:
        return Constant(**kwargs)  # type: ignore[arg-type]

    factory._rlsys_factory = True  # type: ignore[attr-defined]
    assert rewards._adapt(Constant, "c") is Constant
    assert rewards._adapt(factory, "f") is factory
    name = f"const-{uuid.uuid4().hex[:8]}"
    register_reward(name, Constant)
    assert get_reward(name, value=3.0).value == 3.0


def test_entry_point_plugins_are_discovered(tmp_path: Path) -> None:
    """A fake installed distribution (a ``*.dist-info`` on ``sys.path``) registers two rewards
    through the ``rlsys.rewards`` group: a plain function and a class."""
    (tmp_path / "shouty_plugin.py").write_text(textwrap.dedent("""
        def shout(prompt, response, reference):
            return float(response.isupper())

        class Exact:
            name, version = "exact", "1"
            def __init__(self, case_sensitive=True):
                self.case_sensitive = case_sensitive
            def score(self, items):
                from rewards.base import Score
                return [Score(float(it.response == it.reference)) for it in items]
    """))
    dist = tmp_path / "shouty_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: shouty-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[rlsys.rewards]\nshout = shouty_plugin:shout\nexact = shouty_plugin:Exact\n")
    script = textwrap.dedent("""
        import json, sys
        import rewards
        from rewards.base import RewardItem
        names = rewards.reward_names()
        shout = rewards.get_reward("shout").score([RewardItem("p", "HI"), RewardItem("p", "hi")])
        exact = rewards.get_reward("exact", case_sensitive=False)
        print(json.dumps({"names": names, "shout": [s.value for s in shout],
                          "exact": [s.value for s in exact.score([RewardItem("p", "a", "a")])],
                          "heavy": sorted(m for m in ("torch", "ray") if m in sys.modules)}))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=120, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"shout", "exact", "math", "format"} <= set(result["names"])
    assert result["shout"] == [1.0, 0.0]
    assert result["exact"] == [1.0]
    assert result["heavy"] == []  # importing rewards pulls in neither torch nor Ray
