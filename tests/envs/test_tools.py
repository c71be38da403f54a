"""The calculator (our parser, never eval) and ToolBox (errors become observations)."""

from __future__ import annotations

import pytest

from rlsys.envs.parse import ToolCall
from rlsys.envs.tools import CalculatorTool, ToolBox, ToolError, make_tools


@pytest.mark.parametrize(("expression", "expected"), [
    ("4821*937", str(4821 * 937)),
    ("4517277 / 937", "4821"),
    ("7/3", "7/3 = 2.33333333333333"),
    ("2^10", "1024"),
    ("2**10", "1024"),
    ("(1+2) \\times 3", "9"),
    ("\\sqrt{2}", "1.41421356237310"),
    ("-3.5*2", "-7"),
    ("2^{100000}", "9.99002093014385e+30102"),  # too long to print exactly
])
def test_calculator_values(expression, expected):
    assert CalculatorTool()({"expression": expression}) == expected


@pytest.mark.parametrize(("arguments", "message"), [
    ({"expression": "1/0"}, "cannot evaluate"),
    ({"expression": "x + 1"}, "unknown names"),
    ({"expression": "__import__('os').system('true')"}, "cannot evaluate"),
    ({"expression": "2^(10^9)"}, "cannot evaluate"),
    ({"expression": "\\tan(\\pi/2)"}, "undefined or infinite"),
    ({"expression": "\\log(0)"}, "undefined or infinite"),
    ({"expression": 5}, 'argument "expression" must be a string'),
    ({}, 'argument "expression" must be a string'),
])
def test_calculator_errors(arguments, message):
    with pytest.raises(ToolError, match=message.replace("(", r"\(")):
        CalculatorTool()(arguments)


def test_toolbox_turns_every_failure_into_an_error_observation():
    box = ToolBox(make_tools(["calculator"]), max_calls=3)
    calls = [ToolCall("calculator", {"expression": "6*7"}), ToolCall("", error="bad JSON"),
             ToolCall("search", {"q": "x"}), ToolCall("calculator", {"expression": "1/0"})]
    out = box.run(calls)
    assert [m["content"] for m in out] == [
        "42", "error: bad JSON", "error: unknown tool 'search'; available: calculator",
        "error: at most 3 tool calls per turn; 1 ignored"]
    assert all(m["role"] == "tool" for m in out)


def test_fenced_python_counts_only_when_python_is_offered():
    text = "```python\n1 + 1\n```"
    assert ToolBox(make_tools(["calculator"])).calls(text) == []
    box = ToolBox(make_tools(["python"]))
    try:
        [call] = box.calls(text)
        assert box.run([call]) == [{"role": "tool", "name": "python", "content": "2\n"}]
    finally:
        box.close()


def test_python_tool_limits_are_error_observations_and_state_persists():
    box = ToolBox(make_tools(["python"], python={"timeout_s": 1.0}))
    try:
        run = box.run
        assert run([ToolCall("python", {"code": "n = 5"})])[0]["content"] == "(no output)"
        assert run([ToolCall("python", {"code": "n * 2"})])[0]["content"] == "10\n"
        slow = run([ToolCall("python", {"code": "while True: pass"})])[0]["content"]
        assert slow.startswith("error: timeout: no reply within 1 s")
        assert "NameError" in run([ToolCall("python", {"code": "n"})])[0]["content"]
        bad = run([ToolCall("python", {"source": "1"})])[0]["content"]
        assert bad == 'error: argument "code" must be a string'
    finally:
        box.close()


def test_unknown_tool_names_are_refused_when_building():
    with pytest.raises(ValueError, match="unknown tool 'shell'"):
        make_tools(["shell"])


def test_a_tool_that_raises_is_an_error_observation_not_a_crash():
    class Broken:
        name, description = "broken", "raises"

        def __call__(self, arguments):
            raise KeyError("boom")

        def close(self):
            pass

    [message] = ToolBox({"broken": Broken()}).run([ToolCall("broken", {})])
    assert message["content"] == "error: the broken tool failed (KeyError: 'boom')"
