"""``tool_math``: arithmetic a small model gets wrong by heart, with python and calculator tools.

An episode: the opening messages are a system message describing the tools and the user's
problem (``record["prompt"]``). A turn with tool calls is answered with the tools' results
(reward 0, not done); a turn without tool calls is the final answer: its last ``\\boxed{}``
(or other final-answer form ``rewards.math.extract_answer`` knows) must be a number written
out in digits (thousands separators allowed) and is then checked against ``record["answer"]``
by ``rewards.math.verify``: reward 1.0 or 0.0, done. The number rule closes a reward hack: the
verifier computes expressions, so restating the problem (``9539 * 625``) would otherwise equal
the answer; a policy trained without the rule learned exactly that in 8 GRPO steps. After
``max_tool_turns`` turns with calls the episode ends with reward 0 (the model never answered).
``problems(n, seed)`` makes records: 3-4 digit multiplications and exact divisions.
Turn and token caps of the rollout are not handled here (``EnvConfig``).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from rlsys.envs.base import Message, StepResult
from rlsys.envs.tools import ToolBox, make_tools

_ANSWER_FORMAT = "Put the final answer in \\boxed{}."


def problems(n: int, seed: int = 0, digits: tuple[int, int] = (3, 4)) -> list[dict[str, str]]:
    """``n`` records ``{"prompt", "answer"}``: half ``a * b``, half exact ``(a*b) / b``, with
    ``a`` and ``b`` of ``digits[0]``..``digits[1]`` digits, drawn from ``random.Random(seed)``."""
    if n < 0 or not 1 <= digits[0] <= digits[1]:
        raise ValueError(f"problems: need n >= 0 and 1 <= digits[0] <= digits[1], got {n}, "
                         f"{digits}")
    rng = random.Random(seed)

    def number() -> int:
        width = rng.randint(*digits)
        return rng.randint(10 ** (width - 1), 10 ** width - 1)

    out = []
    for i in range(n):
        a, b = number(), number()
        if i % 2 == 0:
            out.append({"prompt": f"What is {a} * {b}? {_ANSWER_FORMAT}", "answer": str(a * b)})
        else:
            out.append({"prompt": f"What is {a * b} / {b}? {_ANSWER_FORMAT}", "answer": str(a)})
    return out


class ToolMathEnv:
    """The ``tool_math`` environment (see the module docstring); one episode at a time."""

    def __init__(self, tools: list[str] | tuple[str, ...] = ("python", "calculator"),
                 max_tool_turns: int = 4, max_calls_per_turn: int = 4,
                 python: Mapping[str, Any] | None = None, verify_timeout_s: float = 5.0) -> None:
        if max_tool_turns < 1:
            raise ValueError(f"max_tool_turns: must be >= 1, got {max_tool_turns}")
        self.tool_names, self.python = tuple(tools), dict(python or {})
        self.max_tool_turns, self.max_calls = max_tool_turns, max_calls_per_turn
        self.verify_timeout_s = verify_timeout_s
        make_tools(self.tool_names, self.python)  # refuse unknown tool names now
        self._box: ToolBox | None = None
        self._answer: str | None = None
        self._tool_turns, self._done = 0, True

    def reset(self, record: Mapping[str, Any]) -> list[Message]:
        """Start an episode: ``record`` needs ``prompt`` and ``answer``."""
        prompt, answer = record.get("prompt"), record.get("answer")
        if not isinstance(prompt, str) or answer is None:
            raise ValueError("tool_math: a record needs a 'prompt' string and an 'answer'")
        self.close()
        self._box = ToolBox(make_tools(self.tool_names, self.python), self.max_calls)
        self._answer, self._tool_turns, self._done = str(answer), 0, False
        system = self._box.describe() + "\nWhen you know the result, answer without a tool " \
                                        "call. " + _ANSWER_FORMAT
        return [{"role": "system", "content": system}, {"role": "user", "content": prompt}]

    def step(self, assistant_text: str) -> StepResult:
        """Run the turn's tool calls, or grade the final answer."""
        if self._done or self._box is None or self._answer is None:
            raise RuntimeError("tool_math: step() without an open episode (call reset)")
        calls = self._box.calls(assistant_text)
        if calls:
            self._tool_turns += 1
            observation = self._box.run(calls)
            info = {"tool_calls": len(calls),
                    "tool_errors": sum(m["content"].startswith("error:") for m in observation)}
            if self._tool_turns >= self.max_tool_turns:
                self._finish()
                return StepResult([], 0.0, True, {**info, "end": "max_tool_turns"})
            return StepResult(observation, 0.0, False, info)
        from rewards.math import extract_answer, verify
        from rewards.math.extract import is_numeral

        pred = extract_answer(assistant_text)
        numeral = pred is not None and is_numeral(pred)
        correct = pred is not None and numeral and verify(pred, self._answer,
                                                          self.verify_timeout_s)
        self._finish()
        info = {"end": "answer", "pred": pred, "correct": correct}
        if pred is not None and not numeral:
            info["not_a_number"] = True
        return StepResult([], 1.0 if correct else 0.0, True, info)

    def _finish(self) -> None:
        self._done = True
        self.close()

    def close(self) -> None:
        """End the episode's tools (the python session)."""
        if self._box is not None:
            self._box.close()
            self._box = None
