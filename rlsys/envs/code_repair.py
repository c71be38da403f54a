"""``code_repair``: write a function; the environment runs the tests and reports the failure.

An episode: the opening messages are a system message with the rules and the task
(``record["prompt"]``); the hidden assert-style tests are ``record["tests"]``. Each turn is an
attempt: the last fenced python block of the text is the program (no block is a failed
attempt). It is judged by ``rewards.code.run_tests`` (two sandboxes; the verdict cannot be
forged by the program). Passed: done. Failed with attempts left: the observation is the
failing test's message (status and detail, not the test source). The final reward is the
fraction of asserts that held in the last attempt, minus ``attempt_penalty`` per attempt
after the first, never below 0.
It does not offer the python tool (``tool_math`` does); turn/token caps are the rollout's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from rlsys.envs.base import Message, StepResult

_BLOCK = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)^[ \t]*```", re.S | re.M)
_RULES = ("Write the requested Python function in one ```python block. Hidden tests will "
          "run it; if a test fails you will see its message and may try again "
          "({attempts} attempt(s) in all).")


def last_python_block(text: str) -> str | None:
    """The body of the last fenced code block in ``text`` (``python`` or unlabeled)."""
    blocks = _BLOCK.findall(text)
    return blocks[-1] if blocks else None


class CodeRepairEnv:
    """The ``code_repair`` environment (see the module docstring); one episode at a time."""

    def __init__(self, max_attempts: int = 3, attempt_penalty: float = 0.0,
                 timeout_s: float = 10.0, memory_mb: int = 512) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts: must be >= 1, got {max_attempts}")
        if not 0.0 <= attempt_penalty <= 1.0:
            raise ValueError(f"attempt_penalty: must be in [0, 1], got {attempt_penalty}")
        self.max_attempts, self.attempt_penalty = max_attempts, attempt_penalty
        self.timeout_s, self.memory_mb = timeout_s, memory_mb
        self._tests: str | None = None
        self._attempts, self._done = 0, True

    def reset(self, record: Mapping[str, Any]) -> list[Message]:
        """Start an episode: ``record`` needs ``prompt`` and ``tests`` (assert statements)."""
        prompt, tests = record.get("prompt"), record.get("tests")
        if not isinstance(prompt, str) or not isinstance(tests, str) or not tests.strip():
            raise ValueError("code_repair: a record needs 'prompt' and non-empty 'tests' strings")
        self._tests, self._attempts, self._done = tests, 0, False
        return [{"role": "system", "content": _RULES.format(attempts=self.max_attempts)},
                {"role": "user", "content": prompt}]

    def step(self, assistant_text: str) -> StepResult:
        """Judge one attempt; feed back the failure or end the episode."""
        if self._done or self._tests is None:
            raise RuntimeError("code_repair: step() without an open episode (call reset)")
        self._attempts += 1
        program = last_python_block(assistant_text)
        if program is None:
            fraction, status, feedback = 0.0, "no_code", "error: no ```python block found"
        else:
            from rewards.code import run_tests

            result = run_tests(program, self._tests, self.timeout_s, self.memory_mb)
            fraction = result.tests_run / result.tests_total if result.tests_total else 0.0
            fraction = 1.0 if result.passed else min(fraction, 1.0)
            status, feedback = result.status, f"tests {result.status}: {result.detail}"
        info = {"attempt": self._attempts, "status": status}
        if status == "passed" or self._attempts >= self.max_attempts:
            self._done = True
            reward = max(0.0, fraction - self.attempt_penalty * (self._attempts - 1))
            return StepResult([], reward, True, {**info, "fraction": fraction})
        left = self.max_attempts - self._attempts
        return StepResult([{"role": "user", "content": f"{feedback}\n({left} attempt(s) left)"}],
                          0.0, False, info)

    def close(self) -> None:
        """Nothing is held between steps (each attempt's sandboxes end with it)."""
        self._done = True
