"""tool_math data generators and the driver-side trajectory helpers (scores, metrics, rows)."""

from __future__ import annotations

import pytest

from rlsys.controller.trajectories import episode_score, trajectory_metrics, trajectory_row
from rlsys.envs.tool_math import ToolMathEnv
from rlsys.tasks import GENERATORS
from rlsys.types import Completion


def test_problems_are_split_and_deterministic():
    train = GENERATORS.get("tool_math")(num=40)
    heldout = GENERATORS.get("tool_math")(num=40, split="eval")
    assert train == GENERATORS.get("tool_math")(num=40)
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in heldout}
    with pytest.raises(ValueError, match="split must be 'train' or 'eval'"):
        GENERATORS.get("tool_math")(num=2, split="test")


@pytest.mark.parametrize("tool", ["calculator", "python"])
def test_demonstrations_are_real_episodes_the_environment_rewards(tool):
    demos = GENERATORS.get("tool_math_demos")(num=3, tool=tool)
    heldout = {r["prompt"] for r in GENERATORS.get("tool_math")(num=200, split="eval")}
    for demo in demos:
        roles = [m["role"] for m in demo["messages"]]
        assert roles == ["system", "user", "assistant", "tool", "assistant"]
        user, call, observation, final = (demo["messages"][i]["content"] for i in (1, 2, 3, 4))
        assert user not in heldout
        assert f'"name": "{tool}"' in call
        # replay: the same environment answers the call with the recorded observation and
        # rewards the recorded final answer
        env = ToolMathEnv(tools=("python", "calculator"))
        answer = final.rsplit("\\boxed{", 1)[1].rstrip("}.")
        env.reset({"prompt": user, "answer": answer})
        assert env.step(call).observation[0]["content"] == observation
        assert env.step(final).reward == 1.0
        env.close()
    with pytest.raises(ValueError, match="tool 'python' is not among tools"):
        GENERATORS.get("tool_math_demos")(num=1, tool="python", tools=["calculator"])


def test_trajectory_scores_metrics_and_rows():
    def episode(reward, turns, calls, errors, truncated, correct=None):
        tr = {"reward": reward, "num_turns": turns, "tool_calls": calls, "tool_errors": errors,
              "truncated": truncated, "end": "truncated" if truncated else "answer",
              "turns": [], "messages": []}
        if correct is not None:
            tr["correct"] = correct
        return Completion(0, [1], [2], "", [0.0], "stop", loss_mask=[True], trajectory=tr)

    batch = [episode(1.0, 2, 1, 0, False, True), episode(0.0, 3, 2, 1, True, False),
             episode(0.5, 1, 0, 0, False)]
    scores = [episode_score(c) for c in batch]
    assert [s.value for s in scores] == [1.0, 0.0, 0.5]
    assert [s.correct for s in scores] == [True, False, False]
    assert trajectory_metrics(batch) == {"turns/mean": 2.0, "tool_calls/mean": 1.0,
                                         "tool_errors": 1.0, "truncated": pytest.approx(1 / 3)}
    assert trajectory_metrics([Completion(0, [1], [2], "", [0.0], "stop")]) == {}
    row = trajectory_row(batch[0], {"prompt": "p", "answer": "4"})
    assert row["prompt"] == "p" and row["correct"] is True and row["end"] == "answer"
    with pytest.raises(ValueError, match="no trajectory"):
        episode_score(Completion(0, [1], [2], "", [0.0], "stop"))
