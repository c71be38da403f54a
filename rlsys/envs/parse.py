"""Find tool calls in an assistant's text: Hermes/Qwen ``<tool_call>`` JSON and fenced python.

``parse_tool_calls(text)`` returns every call in order of appearance, as ``ToolCall`` objects;
a call that cannot be understood (bad JSON, no name, arguments not an object, an unterminated
tag or fence) is a ``ToolCall`` with ``error`` set, so the environment can show the model an
``error: ...`` observation instead of crashing. Rules:

* ``<tool_call>{"name": str, "arguments": object}</tool_call>``: the JSON is read with a real
  JSON decoder from the tag on, so a ``</tool_call>`` or a nested ``<tool_call>`` inside a JSON
  string is just text. ``arguments`` may also be a JSON string holding an object (some
  templates emit that). After a malformed call, scanning resumes after the next
  ``</tool_call>``; a stray ``</tool_call>`` is ignored.
* A fenced block opened by a line starting with three backticks and ``python`` (or ``py``)
  outside every ``<tool_call>`` span is a call of the ``python`` tool with ``{"code": body}``
  (only when ``fenced_python`` is on); an unclosed fence is an error (a cut-off generation).

This module runs nothing and knows no tool.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_FENCE = re.compile(r"^[ \t]*```[ \t]*(?:python3?|py)[ \t]*\n", re.MULTILINE)
_FENCE_END = re.compile(r"^[ \t]*```[ \t]*$", re.MULTILINE)
_DECODER = json.JSONDecoder()


@dataclass(frozen=True)
class ToolCall:
    """One call: ``name`` and ``arguments``, or ``error`` (then name may be empty);
    ``start``/``end``: its span in the text."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    start: int = 0
    end: int = 0


def _json_call(text: str, pos: int) -> tuple[ToolCall, int]:
    """Parse the call whose ``<tool_call>`` tag starts at ``pos``; returns it and the end."""
    body = pos + len(OPEN)
    close = text.find(CLOSE, body)
    resume = len(text) if close < 0 else close + len(CLOSE)
    start = body + len(text[body:]) - len(text[body:].lstrip())
    try:
        obj, end = _DECODER.raw_decode(text, start)
    except json.JSONDecodeError as exc:
        why = "unterminated <tool_call>" if close < 0 else f"not valid JSON ({exc.msg})"
        return ToolCall("", error=why, start=pos, end=resume), resume
    rest = text[end:].lstrip()
    if not rest.startswith(CLOSE):
        why = "unterminated <tool_call>" if close < 0 else "text after the JSON object"
        return ToolCall("", error=why, start=pos, end=resume), resume
    end = len(text) - len(rest) + len(CLOSE)
    return _checked(obj, pos, end), end


def _checked(obj: object, start: int, end: int) -> ToolCall:
    if not isinstance(obj, dict):
        return ToolCall("", error="a tool call must be a JSON object", start=start, end=end)
    name, arguments = obj.get("name"), obj.get("arguments", {})
    if not isinstance(name, str) or not name:
        return ToolCall("", error='a tool call needs a "name" string', start=start, end=end)
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            arguments = None
    if not isinstance(arguments, dict):
        return ToolCall(name, error='"arguments" must be a JSON object', start=start, end=end)
    return ToolCall(name, arguments, start=start, end=end)


def _tagged(text: str) -> list[ToolCall]:
    calls, pos = [], text.find(OPEN)
    while pos >= 0:
        call, end = _json_call(text, pos)
        calls.append(call)
        pos = text.find(OPEN, end)
    return calls


def _fenced(text: str, taken: list[tuple[int, int]]) -> list[ToolCall]:
    calls, pos = [], 0
    while (m := _FENCE.search(text, pos)) is not None:
        if any(a <= m.start() < b for a, b in taken):
            pos = m.end()
            continue
        close = _FENCE_END.search(text, m.end())
        if close is None:
            calls.append(ToolCall("python", error="unterminated ```python block",
                                  start=m.start(), end=len(text)))
            break
        calls.append(ToolCall("python", {"code": text[m.end():close.start()]},
                              start=m.start(), end=close.end()))
        pos = close.end()
    return calls


def parse_tool_calls(text: str, fenced_python: bool = True) -> list[ToolCall]:
    """Every tool call in ``text``, in order; malformed ones carry ``error``."""
    calls = _tagged(text)
    if fenced_python:
        calls += _fenced(text, [(c.start, c.end) for c in calls])
    return sorted(calls, key=lambda c: c.start)
