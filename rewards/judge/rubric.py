"""Judge rubrics: Jinja templates that turn an item into the text a judge model reads.

A pointwise rubric sees ``prompt``, ``response``, ``reference``, ``min_score`` and
``max_score``; a pairwise rubric sees ``prompt``, ``response_a``, ``response_b`` and
``reference``. Templates render in Jinja's immutable sandbox with strict undefined variables,
so a typo in a recipe's rubric fails when the judge is built, not halfway through a run. jinja2 is
imported when a ``Rubric`` is built, never at module import. This module does not call a model
and does not parse answers (see ``rewards.judge.parse``).
"""

from __future__ import annotations

import hashlib
from typing import Any

MODES = ("pointwise", "pairwise")

POINTWISE_RUBRIC = """\
You are a strict grader. Rate how well the response answers the request, on a scale from \
{{ min_score }} (useless or wrong) to {{ max_score }} (fully correct, helpful and clear).
{% if reference is not none %}A reference answer: {{ reference }}
{% endif %}
Request: {{ prompt }}
Response: {{ response }}

Reply with the rating only, as "Score: N"."""

PAIRWISE_RUBRIC = """\
You are a strict grader. Which response answers the request better (correct, helpful, clear)?
{% if reference is not none %}A reference answer: {{ reference }}
{% endif %}
Request: {{ prompt }}
Response A: {{ response_a }}
Response B: {{ response_b }}

Reply with the verdict only: [[A]] if A is better, [[B]] if B is better, [[C]] for a tie."""

#: the variables each mode's template may use, and those it must use
VARIABLES = {"pointwise": ("prompt", "response", "reference", "min_score", "max_score"),
             "pairwise": ("prompt", "response_a", "response_b", "reference")}
REQUIRED = {"pointwise": ("response",), "pairwise": ("response_a", "response_b")}


def prompt_text(prompt: Any) -> str:
    """A prompt as plain text: a string as is, chat messages as ``role: content`` lines."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and all(isinstance(m, dict) for m in prompt):
        return "\n".join(f"{m.get('role', 'user')}: {m.get('content', '')}" for m in prompt)
    return str(prompt)


class Rubric:
    """A compiled judge template for one ``mode``; ``template=None`` picks the built-in one.

    Raises ``ValueError`` (naming the problem) for an unknown mode, a template that does not
    parse, one that uses a variable the mode does not provide, or one that never shows the
    response(s) to the judge.
    """

    def __init__(self, template: str | None = None, *, mode: str = "pointwise") -> None:
        from jinja2 import StrictUndefined, TemplateSyntaxError, meta
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        if mode not in MODES:
            raise ValueError(f"judge mode must be one of {MODES}, got {mode!r}")
        text = template if template is not None else (
            POINTWISE_RUBRIC if mode == "pointwise" else PAIRWISE_RUBRIC)
        env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False,
                                            keep_trailing_newline=True)
        try:
            used = meta.find_undeclared_variables(env.parse(text))
            self._template = env.from_string(text)
        except TemplateSyntaxError as exc:
            raise ValueError(f"judge rubric: not a valid Jinja template (line {exc.lineno}): "
                             f"{exc.message}") from None
        unknown = sorted(used - set(VARIABLES[mode]))
        if unknown:
            raise ValueError(f"judge rubric: unknown variable(s) {unknown}; a {mode} rubric may "
                             f"use {', '.join(VARIABLES[mode])}")
        missing = [v for v in REQUIRED[mode] if v not in used]
        if missing:
            raise ValueError(f"judge rubric: a {mode} rubric must show {missing} to the judge")
        self.mode = mode
        self.text = text
        self.version = hashlib.sha256(text.encode()).hexdigest()[:12]

    def render(self, **fields: Any) -> str:
        """The judge prompt for one item (``prompt`` may be chat messages)."""
        values: dict[str, Any] = {name: None for name in VARIABLES[self.mode]}
        values.update(fields)
        values["prompt"] = prompt_text(values["prompt"])
        return self._template.render(**values)
