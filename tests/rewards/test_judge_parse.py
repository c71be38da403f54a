"""Judge answers -> scores and verdicts, and the Jinja rubrics (pure, no model)."""

from __future__ import annotations

import pytest

from rewards.judge import JudgeParseError, Rubric, parse_score, parse_verdict
from rewards.judge.rubric import prompt_text


@pytest.mark.parametrize("text,expected", [
    ("Score: 7", 7.0),
    ("The response is correct but terse.\nScore: 8", 8.0),
    ("rating = 3", 3.0),
    ("[[9]]", 9.0),
    ("[[6/10]]", 6.0),
    ("  5 ", 5.0),
    ("7/10", 7.0),
    ("7 out of 10.", 7.0),
    (" 9\n\nQuestion: What is 2 + 2?\nAnswer: 4", 9.0),  # a few-shot completion runs on
    ("Score: 4.5", 4.5),
    ("Score: 2 at first... on reflection, Score: 6", 6.0),  # the conclusion wins
    ("[[3]] although the grade is 9", 3.0),  # the explicit [[N]] form outranks prose
])
def test_parse_score_reads_the_verdict(text, expected):
    assert parse_score(text, min_score=1, max_score=10) == expected


@pytest.mark.parametrize("text,reason", [
    ("", "no score"),
    ("I'm sorry for your loss, but as a grammar", "no score"),
    ("2 + 3 = 5", "no score"),  # numbers in prose are not a score
    ("1. The answer is right", "no score"),
    ("Score: 11", "outside"),
    ("Score: 0", "outside"),
    ("Score: 4/5", "scale"),  # another scale is an error, not rescaled
])
def test_parse_score_refuses_garbage(text, reason):
    with pytest.raises(JudgeParseError, match=reason):
        parse_score(text, min_score=1, max_score=10)


@pytest.mark.parametrize("text,expected", [
    ("[[A]]", "A"),
    ("A is concise but wrong. [[B]]", "B"),
    ("[[C]]", "tie"),
    ("[[tie]]", "tie"),
    ("Verdict: B", "B"),
    ("The better response is A.", "A"),
    ("Response B is better because it is correct.", "B"),
    ("A is better than B.", "A"),
    ("b", "B"),
    ("  (A) ", "A"),
    ("tie", "tie"),
])
def test_parse_verdict_reads_the_verdict(text, expected):
    assert parse_verdict(text) == expected


@pytest.mark.parametrize("text,reason", [
    ("", "no verdict"),
    ("The answer is a bit long", "no verdict"),  # the article "a" is not a verdict
    ("A: banana", "no verdict"),
    ("[[A]] no wait [[B]]", "conflicting"),
    ("[[D]]", "no verdict"),
])
def test_parse_verdict_refuses_garbage(text, reason):
    with pytest.raises(JudgeParseError, match=reason):
        parse_verdict(text)


def test_builtin_rubrics_render_every_field():
    point = Rubric(mode="pointwise").render(prompt="What is 2+3?", response="5", reference="5",
                                            min_score=1, max_score=10)
    assert "What is 2+3?" in point and "Response: 5" in point
    assert "from 1 (" in point and "to 10 (" in point and "A reference answer: 5" in point
    pair = Rubric(mode="pairwise").render(prompt="q", response_a="first", response_b="second")
    assert "Response A: first" in pair and "Response B: second" in pair
    assert "reference" not in pair  # no reference given: that block is left out


def test_custom_rubric_and_chat_prompts():
    rubric = Rubric("Q: {{ prompt }} | R: {{ response }}{% if reference %} | G: {{ reference }}"
                    "{% endif %}", mode="pointwise")
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert rubric.render(prompt=messages, response="yo") == "Q: system: be brief\nuser: hi | R: yo"
    assert rubric.render(prompt="p", response="r", reference=3) == "Q: p | R: r | G: 3"
    assert prompt_text("plain") == "plain"
    assert Rubric("{{ response }}").version != Rubric("{{ response }}!").version


@pytest.mark.parametrize("template,mode,reason", [
    ("{{ prompt }} {{ respnse }}", "pointwise", "unknown variable"),
    ("{{ prompt }}", "pointwise", "must show"),
    ("{{ response_a }}", "pairwise", "must show"),
    ("{{ response }} {% if %}", "pointwise", "not a valid Jinja"),
    ("{{ response }}", "listwise", "mode must be one of"),
])
def test_bad_rubrics_fail_when_built(template, mode, reason):
    with pytest.raises(ValueError, match=reason):
        Rubric(template, mode=mode)


def test_rubric_runs_sandboxed():
    from jinja2.exceptions import SecurityError

    rubric = Rubric("{{ response.__class__.__mro__ }}", mode="pointwise")
    with pytest.raises(SecurityError):
        rubric.render(prompt="p", response="r")
