"""Tools an environment offers the model, and ``ToolBox``, which runs the calls of one turn.

* ``python``: a persistent sandboxed session per trajectory (``rewards.code.session``), so
  every guarantee of ``rewards.code`` holds (no network, no host files, rlimits, a memory
  total, nothing left running); per-call time, memory and shown-output limits.
* ``calculator``: one arithmetic expression (LaTeX or plain: ``4821*937``, ``2^{10}``,
  ``\\sqrt{2}``, ``7/3``) parsed by our own math parser and evaluated by sympy from its AST,
  never ``eval``; size limits are the verifier's (``rewards.math.values``). Exact integers and
  fractions below 10^60 are printed exactly, everything else to 15 significant digits. It runs
  in this process with no time limit of its own: the verifier's size limits bound the work
  (the slowest input found, ``\\sin(10^{399})``, takes ~2 s).

``ToolBox.run(text)`` turns the calls found in an assistant's text into observation messages
``{"role": "tool", "name": ..., "content": ...}``; an unknown tool, a malformed call, bad
arguments or a failing tool gives ``content`` starting with ``error:`` and never raises.
This module does not decide rewards or when an episode ends.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Protocol

from rlsys.envs.base import Message
from rlsys.envs.parse import ToolCall, parse_tool_calls

_EXACT_LIMIT = 10 ** 60  # larger exact values are shown to 15 significant digits


class ToolError(Exception):
    """A tool call that failed in a way the model should read (``error: <message>``)."""


class Tool(Protocol):
    """A named callable on JSON arguments returning the text the model sees."""

    name: str
    description: str

    def __call__(self, arguments: Mapping[str, Any]) -> str:
        """Run the tool; raise ``ToolError`` for an error the model should see."""
        ...

    def close(self) -> None:
        """Free the tool's resources (end its session); idempotent."""
        ...


def _string_arg(arguments: Mapping[str, Any], key: str) -> str:
    value = arguments.get(key)
    if not isinstance(value, str):
        raise ToolError(f'argument "{key}" must be a string')
    return value


class CalculatorTool:
    """Evaluate one arithmetic expression with the math verifier's parser (never ``eval``)."""

    name = "calculator"
    description = ('Evaluate an arithmetic expression exactly. Arguments: {"expression": str}, '
                   "e.g. 4821*937, 7/3, 2^{10}, \\sqrt{2}.")

    def __call__(self, arguments: Mapping[str, Any]) -> str:
        """The value of ``arguments["expression"]`` as text."""
        import sympy

        from rewards.math.convert import scalar
        from rewards.math.lexer import AnswerError
        from rewards.math.parser import parse

        text = _string_arg(arguments, "expression").replace("**", "^")
        text = re.sub(r"\^(\d+)", r"^{\1}", text)  # plain 2^10 means 2^{10}, not LaTeX 2^1 0
        try:
            expr = scalar(parse(text)).expr
        except (AnswerError, ValueError, TypeError, ZeroDivisionError, ArithmeticError,
                RecursionError) as exc:
            raise ToolError(f"cannot evaluate: {exc}") from None
        if getattr(expr, "has", None) and expr.has(sympy.zoo, sympy.oo, sympy.nan):
            raise ToolError("the value is undefined or infinite")
        if getattr(expr, "free_symbols", None):
            names = ", ".join(sorted(str(s) for s in expr.free_symbols))
            raise ToolError(f"unknown names in the expression: {names}")
        try:
            if isinstance(expr, sympy.Rational) and max(abs(expr.p), expr.q) < _EXACT_LIMIT:
                return str(expr) if expr.q == 1 else f"{expr} = {sympy.N(expr, 15)}"
            return str(sympy.N(expr, 15))
        except (ValueError, TypeError, ArithmeticError) as exc:
            raise ToolError(f"cannot evaluate: {exc}") from None

    def close(self) -> None:
        """Nothing to free."""


class PythonTool:
    """A persistent sandboxed Python session; started on first use, ended by ``close``."""

    name = "python"
    description = ('Run Python code in a persistent sandboxed session (state is kept between '
                   'calls; no network, standard library only). Arguments: {"code": str}. '
                   "A last bare expression's value is printed.")

    def __init__(self, **session_kwargs: Any) -> None:
        self._session_kwargs = session_kwargs
        self._session: Any = None

    def __call__(self, arguments: Mapping[str, Any]) -> str:
        """Run ``arguments["code"]``; output and traceback as text, limits as ``ToolError``."""
        from rewards.code.session import PythonSession

        code = _string_arg(arguments, "code")
        if self._session is None:
            self._session = PythonSession(**self._session_kwargs)
        result = self._session.run(code)
        if result.status in ("ok", "error", "memory") and not result.restarted:
            return result.output + (result.error or "") or "(no output)"
        raise ToolError(f"{result.status}: {result.error}" +
                        (f"\noutput before that:\n{result.output}" if result.output else ""))

    def close(self) -> None:
        """End the session (kills every process it started)."""
        if self._session is not None:
            self._session.close()
            self._session = None


def make_tools(names: list[str] | tuple[str, ...],
               python: Mapping[str, Any] | None = None) -> dict[str, Tool]:
    """Build the named built-in tools; ``python`` holds ``PythonSession`` keyword arguments."""
    tools: dict[str, Tool] = {}
    for name in names:
        if name == "python":
            tools[name] = PythonTool(**(python or {}))
        elif name == "calculator":
            tools[name] = CalculatorTool()
        else:
            raise ValueError(f"unknown tool {name!r}; known: calculator, python")
    return tools


class ToolBox:
    """Runs the tool calls of a turn (at most ``max_calls``) and returns observations."""

    def __init__(self, tools: Mapping[str, Tool], max_calls: int = 4,
                 fenced_python: bool = True) -> None:
        if max_calls < 1:
            raise ValueError(f"max_calls: must be >= 1, got {max_calls}")
        self.tools, self.max_calls, self.fenced_python = dict(tools), max_calls, fenced_python

    def calls(self, text: str) -> list[ToolCall]:
        """The calls in ``text`` (fenced python only when the python tool is offered)."""
        return parse_tool_calls(text, self.fenced_python and "python" in self.tools)

    def run(self, calls: list[ToolCall]) -> list[Message]:
        """One observation message per call; never raises for what the model wrote."""
        out = [self._one(call) for call in calls[:self.max_calls]]
        if len(calls) > self.max_calls:
            out.append({"role": "tool", "name": "",
                        "content": f"error: at most {self.max_calls} tool calls per turn; "
                                   f"{len(calls) - self.max_calls} ignored"})
        return out

    def _one(self, call: ToolCall) -> Message:
        if call.error is not None:
            return {"role": "tool", "name": call.name, "content": f"error: {call.error}"}
        tool = self.tools.get(call.name)
        if tool is None:
            known = ", ".join(sorted(self.tools)) or "(none)"
            return {"role": "tool", "name": call.name,
                    "content": f"error: unknown tool {call.name!r}; available: {known}"}
        try:
            content = tool(call.arguments)
        except ToolError as exc:
            content = f"error: {exc}"
        except Exception as exc:  # noqa: BLE001 - a tool's bug is the model's observation too
            content = f"error: the {call.name} tool failed ({type(exc).__name__}: {exc})"
        return {"role": "tool", "name": call.name, "content": content}

    def describe(self) -> str:
        """Instructions listing the tools and the call format, for a system message."""
        lines = [f"- {t.name}: {t.description}" for t in self.tools.values()]
        return ("You can call tools. To call one, write\n"
                '<tool_call>{"name": "TOOL", "arguments": {...}}</tool_call>\n'
                "and wait for its result. Tools:\n" + "\n".join(lines))

    def close(self) -> None:
        """Close every tool (ends python sessions)."""
        for tool in self.tools.values():
            tool.close()
