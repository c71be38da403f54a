"""tool_math and code_repair episodes driven by scripted assistant texts (real tools, real
sandbox, real math verifier)."""

from __future__ import annotations

import pytest

from rlsys.envs import get_env
from rlsys.envs.tool_math import problems

RECORD = {"prompt": "What is 4821 * 937? Put the final answer in \\boxed{}.",
          "answer": str(4821 * 937)}


def _call(name: str, args: str) -> str:
    return f'<tool_call>{{"name": "{name}", "arguments": {args}}}</tool_call>'


@pytest.fixture
def tool_math():
    env = get_env("tool_math", max_tool_turns=3, python={"timeout_s": 5.0})
    yield env
    env.close()


def test_problems_are_hard_arithmetic_with_exact_answers():
    records = problems(6, seed=1)
    assert records == problems(6, seed=1) and records != problems(6, seed=2)
    for i, r in enumerate(records):
        a, op, b = r["prompt"].removeprefix("What is ").split("?")[0].split()
        assert op == ("*" if i % 2 == 0 else "/") and 3 <= len(b) <= 4
        value = int(a) * int(b) if op == "*" else int(a) // int(b)
        assert op == "*" or int(a) % int(b) == 0
        assert r["answer"] == str(value)


def test_tool_math_opening_messages_describe_the_tools(tool_math):
    system, user = tool_math.reset(RECORD)
    assert system["role"] == "system" and "<tool_call>" in system["content"]
    assert "calculator" in system["content"] and "python" in system["content"]
    assert user == {"role": "user", "content": RECORD["prompt"]}


def test_tool_math_right_answer_after_using_both_tools(tool_math):
    tool_math.reset(RECORD)
    calc = tool_math.step("Let me compute. " + _call("calculator", '{"expression": "4821*937"}'))
    assert (calc.done, calc.reward) == (False, 0.0)
    assert calc.observation == [{"role": "tool", "name": "calculator",
                                 "content": str(4821 * 937)}]
    py = tool_math.step("Check:\n```python\nr = 4821 * 937\nr\n```")
    assert py.observation[0]["content"] == f"{4821 * 937}\n"
    final = tool_math.step(f"So the product is \\boxed{{{4821 * 937}}}.")
    assert (final.done, final.reward, final.info["correct"]) == (True, 1.0, True)
    with pytest.raises(RuntimeError, match="without an open episode"):
        tool_math.step("again")


def test_tool_math_wrong_answer_scores_zero(tool_math):
    tool_math.reset(RECORD)
    final = tool_math.step("\\boxed{4517276}")
    assert (final.done, final.reward, final.info["pred"]) == (True, 0.0, "4517276")


@pytest.mark.parametrize("text", ["4821 * 937", "\\boxed{4821 \\cdot 937}", "4821*937",
                                  "\\boxed{4517278 - 1}", "\\boxed{\\frac{9035754}{2}}"])
def test_tool_math_restating_the_problem_is_not_an_answer(tool_math, text):
    """The verifier computes expressions, so an answer that restates the problem equals the
    gold value; the environment only accepts a number written out (a policy trained before this
    rule learned to answer '9539 * 625' and scored 1.0 on every held-out problem)."""
    tool_math.reset(RECORD)
    final = tool_math.step(text)
    assert (final.done, final.reward, final.info["correct"]) == (True, 0.0, False)
    assert final.info["not_a_number"] is True


@pytest.mark.parametrize("text", ["\\boxed{4517277}", "The answer is \\boxed{4,517,277}.",
                                  "\\boxed{4\\,517\\,277}", "4517277"])
def test_tool_math_accepts_the_number_in_its_usual_spellings(tool_math, text):
    tool_math.reset(RECORD)
    final = tool_math.step(text)
    assert (final.done, final.reward, final.info["correct"]) == (True, 1.0, True)
    assert "not_a_number" not in final.info


def test_tool_math_malformed_call_is_an_observation_not_an_end(tool_math):
    tool_math.reset(RECORD)
    bad = tool_math.step('<tool_call>{"name": "calculator", "arguments": {"expr')
    assert not bad.done and bad.info["tool_errors"] == 1
    assert bad.observation[0]["content"] == "error: unterminated <tool_call>"
    final = tool_math.step(f"\\boxed{{{4821 * 937}}}")
    assert final.reward == 1.0


def test_tool_math_ends_after_max_tool_turns_with_zero(tool_math):
    tool_math.reset(RECORD)
    for _ in range(2):
        assert not tool_math.step(_call("calculator", '{"expression": "1+1"}')).done
    last = tool_math.step(_call("calculator", '{"expression": "1+1"}'))
    assert (last.done, last.reward, last.info["end"]) == (True, 0.0, "max_tool_turns")


def test_tool_math_session_ends_with_the_episode(tool_math):
    tool_math.reset(RECORD)
    tool_math.step("```python\nx = 1\n```")
    session = tool_math._box.tools["python"]._session
    assert len(session.pids()) == 3
    tool_math.step("\\boxed{1}")
    assert session.closed and session.pids() == []


TASK = {"prompt": "Write add(a, b) returning a + b.",
        "tests": "assert add(1, 2) == 3\nassert add(2, 2) == 4\nassert add(0, 5) == 5\n"}
RIGHT = "```python\ndef add(a, b):\n    return a + b\n```"
HALF = "```python\ndef add(a, b):\n    return 4 if a == 2 else 0\n```"


def test_code_repair_passes_at_once():
    env = get_env("code_repair", max_attempts=3)
    env.reset(TASK)
    result = env.step("Here:\n" + RIGHT)
    assert (result.done, result.reward, result.info["status"]) == (True, 1.0, "passed")


def test_code_repair_feedback_then_fix_with_penalty():
    env = get_env("code_repair", max_attempts=3, attempt_penalty=0.25)
    env.reset(TASK)
    first = env.step(HALF)
    assert not first.done and first.reward == 0.0
    [message] = first.observation
    assert message["role"] == "user" and message["content"].startswith(
        "tests failed: statement 1: assert")
    assert "2 attempt(s) left" in message["content"] and "add(1, 2)" not in message["content"]
    second = env.step(RIGHT)
    assert (second.done, second.reward) == (True, 0.75)


def test_code_repair_max_attempts_rewards_the_fraction_that_held():
    env = get_env("code_repair", max_attempts=2)
    env.reset(TASK)
    no_code = env.step("I am not sure.")
    assert no_code.observation[0]["content"].startswith("error: no ```python block found")
    last = env.step(HALF)
    assert last.done and last.info["status"] == "failed"
    assert last.reward == pytest.approx(1 / 3)  # add(2, 2) == 4 held, the other two failed


def test_code_repair_records_are_checked():
    env = get_env("code_repair")
    with pytest.raises(ValueError, match="needs 'prompt' and non-empty 'tests'"):
        env.reset({"prompt": "x", "tests": " "})
