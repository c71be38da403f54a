"""``MathReward``: the registry's ``math`` reward (1 for a correct final answer, + a format bonus).

``grade_batch(responses, references)`` does the per-item work shared with the benchmark:
extract the response's answer (or, when the reference is a multiple-choice letter, the chosen
letter), extract the reference's answer when it is a full solution, and verify equivalence
over the process pool. It does not read prompts and never raises for bad model text; a
missing (None) reference is reported as that item's error.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from rewards.base import RewardItem, Score
from rewards.math import extract_answer, has_boxed, verify_batch
from rewards.math.extract import clean_answer, is_numeral

_LETTER_RE = re.compile(r"\s*\(?([A-E])\)?(?:[\s.:)。,]|$)")
_CHOICE_PATTERNS = [
    re.compile(r"^\s*\**\(?([A-E])\)?\**(?![A-Za-z])"),
    re.compile(r"(?:answer|choice|option|réponse)\W*(?:is|est|:)?\W*(?:for sure\s+)?"
               r"\(?([A-E])\)?(?![A-Za-z])", re.IGNORECASE),
    re.compile(r"(?:\bis|'s|\best|\bbe)\s+\(?([A-E])\)?(?![A-Za-z])"),
]


@dataclass(frozen=True)
class Graded:
    """The outcome for one response: the extracted answer and whether it is correct
    (``timed_out``: the comparison ran past its timeout, so ``correct`` is False unproven)."""

    extracted: str | None
    correct: bool
    timed_out: bool = False


def choice_letter(reference: str) -> str | None:
    """The letter of a multiple-choice reference such as ``C``, ``(D) Alina``, ``\\text{(B)}``."""
    if len(reference) > 200:
        return None
    text = clean_answer(reference)
    if re.fullmatch(r"\(?[A-E]\)?\.?", text.strip()):
        return text.strip("() .")
    m = re.fullmatch(r"\s*\(([A-E])\)\s+\S.*|\s*([A-E])\s+[A-Z][a-z]+.*", text, re.DOTALL)
    if m:
        return m.group(1) or m.group(2)
    m = re.search(r"answer is\s*\n?\s*\(?([A-E])\)?(?![A-Za-z])", text)
    return m.group(1) if m else None


def extract_choice(response: str) -> str | None:
    """The letter a response picks: a leading letter, "answer is X", "it's X", a box."""
    answer = extract_answer(response)
    if answer is not None:
        m = _LETTER_RE.fullmatch(answer)
        if m:
            return m.group(1)
    for pattern in _CHOICE_PATTERNS:
        found = pattern.findall(response[-5000:])
        if found:
            return found[-1] if pattern is not _CHOICE_PATTERNS[0] else found[0]
    return None


def reference_answer(reference: str) -> str:
    """The gold answer: extracted when the reference is a full solution, else cleaned."""
    extracted = extract_answer(reference)
    return extracted if extracted is not None else clean_answer(reference)


def grade_batch(responses: Sequence[str], references: Sequence[str], timeout: float = 5.0,
                workers: int | None = None, use_cache: bool = True) -> list[Graded]:
    """Grade each response against its reference (multiple-choice letters compare as letters)."""
    out: list[Graded | None] = [None] * len(responses)
    pairs, where = [], []
    for i, (response, reference) in enumerate(zip(responses, references, strict=True)):
        letter = choice_letter(reference)
        if letter is not None:
            picked = extract_choice(response)
            out[i] = Graded(picked, picked == letter)
            continue
        pred = extract_answer(response)
        if pred is None:
            out[i] = Graded(None, False)
            continue
        pairs.append((pred, reference_answer(reference)))
        where.append(i)
    verdicts = verify_batch(pairs, timeout=timeout, workers=workers, use_cache=use_cache,
                            on_timeout=None)
    for i, (pred, _), verdict in zip(where, pairs, verdicts, strict=True):
        out[i] = Graded(pred, bool(verdict), timed_out=verdict is None)
    return [g for g in out if g is not None]


class MathReward:
    """Reward 1.0 for an answer equivalent to the reference, plus ``format_bonus`` when the
    response has a ``\\boxed{}`` answer at all.

    ``answer_form="number"``: the extracted answer must also be a number written out in digits
    (``is_numeral``), for tasks whose point is to compute a value: the verifier evaluates
    expressions, so restating the problem (``\\boxed{3 + 4}``) would otherwise be correct.
    Such answers score 0 with ``info["status"] = "not_a_number"``. Default ``"any"``."""

    name = "math"
    version = "1"

    def __init__(self, timeout: float = 5.0, format_bonus: float = 0.0,
                 workers: int | None = None, answer_form: str = "any") -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")
        if answer_form not in ("any", "number"):
            raise ValueError(f"answer_form must be 'any' or 'number', got {answer_form!r}")
        self.answer_form = answer_form
        self.timeout = timeout
        self.format_bonus = format_bonus
        self.workers = workers

    def score(self, items: Sequence[RewardItem]) -> list[Score]:
        """One ``Score`` per item; info carries ``extracted`` and ``correct`` (and
        ``status: "timeout"`` when the comparison timed out: scored 0, never cached)."""
        scores: list[Score | None] = [None] * len(items)
        todo = []
        for i, item in enumerate(items):
            if item.reference is None or not isinstance(item.response, str):
                field = "reference" if item.reference is None else "response"
                scores[i] = Score(None, error=f"math reward: item {i} has no {field}")
            else:
                todo.append(i)
        graded = grade_batch([items[i].response for i in todo],
                             [str(items[i].reference) for i in todo],
                             timeout=self.timeout, workers=self.workers)
        for i, g in zip(todo, graded, strict=True):
            bonus = self.format_bonus if has_boxed(items[i].response) else 0.0
            correct = g.correct
            info: dict = {"extracted": g.extracted, "correct": correct}
            if g.timed_out:  # load-dependent: the service does not cache it
                info["status"] = "timeout"
            elif (self.answer_form == "number" and g.extracted is not None
                  and not is_numeral(g.extracted)):
                correct = info["correct"] = False
                info["status"] = "not_a_number"
            scores[i] = Score(float(correct) + bonus, info=info)
        return [s for s in scores if s is not None]
