"""``JudgeReward``: an LLM judge (RLAIF) as a reward -- pointwise scores or pairwise A/B.

The judge model sits behind a plain ``generate(prompts) -> texts`` callable (a Ray pool of
rollout engines in ``actors.judge_pool``, or any function), which should decode greedily so the
same input always gets the same verdict. This class renders each item with a Jinja rubric,
sends the distinct judge prompts not yet in its cache in batches of ``batch_size``, each batch
bounded by ``timeout_s``, and parses the answers:

* pointwise: ``Score: N`` on ``[min_score, max_score]``, returned normalised to ``[0, 1]``;
* pairwise: each pair is judged in both orders (A/B, then B/A) to cancel position bias; the
  preference for the first response is ``(s_ab + s_ba) / 2`` in ``[-1, 1]`` (a judge that always
  says "A" yields 0).

An unparsable answer, a timeout or a failing backend is a per-item ``Score`` error, counted in
``stats``, never a crash and never a silent zero. Answers are cached by the SHA-256 of the
rendered judge prompt (which holds rubric, prompt, response(s) and order); timeouts and backend
failures are not cached. This module imports neither torch nor Ray and does not start models.
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from rewards.base import RewardItem, Score
from rewards.judge.parse import JudgeParseError, parse_score, parse_verdict
from rewards.judge.rubric import Rubric

Generate = Callable[[list[str]], list[str]]
_SIGN = {"A": 1.0, "B": -1.0, "tie": 0.0}


def _key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def call_with_deadline(fn: Callable[[], Any], timeout_s: float) -> Any:
    """``fn()`` in a daemon thread; ``TimeoutError`` past ``timeout_s`` (the thread is left to
    finish on its own: a hung backend cannot block the caller)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=run, name="judge-call", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise TimeoutError(f"judge did not answer within {timeout_s:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


class JudgeReward:
    """An LLM judge behind ``generate`` (see the module docstring).

    Args:
        generate: ``generate(prompts: list[str]) -> list[str]``, one answer per judge prompt.
        mode: ``"pointwise"`` or ``"pairwise"`` (``score`` then compares each response with its
            item's ``reference`` response: a win rate against a baseline).
        rubric: a Jinja template (see ``rewards.judge.rubric``); None uses the built-in one.
        min_score, max_score: the pointwise scale the rubric asks for.
        batch_size: judge prompts per ``generate`` call.
        timeout_s: deadline of one ``generate`` call.
        cache_size: judge answers kept (least recently used dropped first); 0 disables caching.
    """

    name = "judge"

    def __init__(self, generate: Generate | None = None, *, mode: str = "pointwise",
                 rubric: str | None = None, min_score: float = 1.0, max_score: float = 10.0,
                 batch_size: int = 16, timeout_s: float = 120.0, cache_size: int = 10_000,
                 ) -> None:
        if generate is None:
            raise ValueError("judge reward needs a judge model: in a recipe set `judge` in a "
                             "preference_pairs stage's `generate` section (a judge worker "
                             "pool); in code pass generate=fn(prompts) -> answers")
        if not min_score < max_score:
            raise ValueError(f"judge: min_score ({min_score}) must be < max_score ({max_score})")
        if batch_size < 1 or timeout_s <= 0 or cache_size < 0:
            raise ValueError(f"judge: need batch_size >= 1, timeout_s > 0, cache_size >= 0; got "
                             f"{batch_size}, {timeout_s}, {cache_size}")
        self.generate = generate
        self.rubric = Rubric(rubric, mode=mode)
        self.mode = mode
        self.min_score, self.max_score = float(min_score), float(max_score)
        self.batch_size, self.timeout_s, self.cache_size = batch_size, timeout_s, cache_size
        self.version = f"judge:{mode}:{self.rubric.version}:{min_score:g}-{max_score:g}"
        self._cache: OrderedDict[str, str] = OrderedDict()
        #: requests, cache_hits, judged, parse_errors, timeouts, backend_errors and (pairwise)
        #: position_inconsistent: pairs whose two orders disagree
        self.stats: Counter = Counter()

    # --- the judge calls ---------------------------------------------------------------------
    def answers(self, prompts: Sequence[str]) -> list[str | Exception]:
        """The judge's answer to each prompt (or the exception that stopped it), from the cache
        where possible; each distinct uncached prompt is judged once, in batches."""
        self.stats["requests"] += len(prompts)
        got: dict[str, str | Exception] = {}
        todo: dict[str, str] = {}  # key -> judge prompt, each distinct prompt once
        for text in prompts:
            key = _key(text)
            if key in self._cache:
                self._cache.move_to_end(key)
                got[key] = self._cache[key]
                self.stats["cache_hits"] += 1
            elif key in todo:
                self.stats["cache_hits"] += 1  # a repeat within this call: judged once
            else:
                todo[key] = text
        pending = list(todo.values())
        for start in range(0, len(pending), self.batch_size):
            batch = pending[start:start + self.batch_size]
            for text, answer in zip(batch, self._judge_batch(batch), strict=True):
                got[_key(text)] = answer
        return [got[_key(text)] for text in prompts]

    def _judge_batch(self, batch: list[str]) -> list[str | Exception]:
        try:
            answers = call_with_deadline(lambda: self.generate(list(batch)), self.timeout_s)
            if len(answers) != len(batch):
                raise RuntimeError(f"judge returned {len(answers)} answers for {len(batch)} "
                                   "prompts")
        except TimeoutError as exc:
            self.stats["timeouts"] += len(batch)
            return [exc] * len(batch)
        except Exception as exc:  # noqa: BLE001 - a failing backend fails its items only
            self.stats["backend_errors"] += len(batch)
            return [RuntimeError(f"judge backend failed: {type(exc).__name__}: {exc}")] * len(batch)
        self.stats["judged"] += len(batch)
        for text, answer in zip(batch, answers, strict=True):
            self._remember(_key(text), str(answer))
        return [str(a) for a in answers]

    def _remember(self, key: str, answer: str) -> None:
        if self.cache_size == 0:
            return
        self._cache[key] = answer
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    # --- pointwise ---------------------------------------------------------------------------
    def _pointwise(self, items: Sequence[RewardItem]) -> list[Score]:
        prompts = [self.rubric.render(prompt=it.prompt, response=it.response,
                                      reference=it.reference, min_score=_num(self.min_score),
                                      max_score=_num(self.max_score)) for it in items]
        out = []
        for answer in self.answers(prompts):
            if isinstance(answer, Exception):
                out.append(Score(None, error=f"judge: {answer}"))
                continue
            try:
                raw = parse_score(answer, min_score=self.min_score, max_score=self.max_score)
            except JudgeParseError as exc:
                self.stats["parse_errors"] += 1
                out.append(Score(None, error=f"judge: {exc}", info={"answer": answer}))
                continue
            value = (raw - self.min_score) / (self.max_score - self.min_score)
            out.append(Score(value, info={"raw": raw}))
        return out

    # --- pairwise ----------------------------------------------------------------------------
    def prefer(self, prompts: Sequence[Any], first: Sequence[str], second: Sequence[str],
               references: Sequence[Any] | None = None) -> list[Score]:
        """Preference for ``first[i]`` over ``second[i]`` in ``[-1, 1]`` (0 = tie), judged in
        both orders; either order unparsable makes that pair an error."""
        refs = list(references) if references is not None else [None] * len(prompts)
        texts = []
        for p, a, b, ref in zip(prompts, first, second, refs, strict=True):
            texts.append(self.rubric.render(prompt=p, response_a=a, response_b=b, reference=ref))
            texts.append(self.rubric.render(prompt=p, response_a=b, response_b=a, reference=ref))
        answers = self.answers(texts)
        out = []
        for i in range(len(prompts)):
            verdicts = []
            for answer in answers[2 * i:2 * i + 2]:
                if isinstance(answer, Exception):
                    verdicts.append(f"judge: {answer}")
                    continue
                try:
                    verdicts.append(parse_verdict(answer))
                except JudgeParseError as exc:
                    self.stats["parse_errors"] += 1
                    verdicts.append(f"judge: {exc}")
            errors = [v for v in verdicts if v not in _SIGN]
            if errors:
                out.append(Score(None, error="; ".join(errors)))
                continue
            # swapped order: "A" now names the second response, so its sign flips
            value = (_SIGN[verdicts[0]] - _SIGN[verdicts[1]]) / 2
            consistent = _SIGN[verdicts[0]] == -_SIGN[verdicts[1]]
            # a verdict that follows the position, not the content: the judge's position bias
            self.stats["position_inconsistent"] += not consistent
            out.append(Score(value, info={"verdicts": verdicts, "consistent": consistent}))
        return out

    def _pairwise(self, items: Sequence[RewardItem]) -> list[Score]:
        out: list[Score | None] = [None] * len(items)
        todo = []
        for i, item in enumerate(items):
            if isinstance(item.reference, str):
                todo.append(i)
            else:
                out[i] = Score(None, error="judge: pairwise scoring needs the reference response "
                                           "to compare with (item.reference as a string)")
        scores = self.prefer([items[i].prompt for i in todo], [items[i].response for i in todo],
                             [items[i].reference for i in todo])
        for i, score in zip(todo, scores, strict=True):
            out[i] = score
        return [s for s in out if s is not None]

    # --- the Reward protocol and ranking -----------------------------------------------------
    def score(self, items: Sequence[RewardItem]) -> list[Score]:
        """One ``Score`` per item: pointwise in ``[0, 1]``, pairwise (vs ``reference``) in
        ``[-1, 1]``; unparsable answers and timeouts are per-item errors."""
        items = list(items)
        return self._pointwise(items) if self.mode == "pointwise" else self._pairwise(items)

    def rank(self, groups: Sequence[tuple[Any, Sequence[str], Any]]) -> list[list[Score]]:
        """Scores for ranking candidates: ``groups`` holds ``(prompt, responses, reference)``,
        the answer one list of scores per group, all groups judged in shared batches.

        Pointwise: each response's score. Pairwise: a round robin -- every pair of a group
        judged in both orders -- and each response scores its mean preference over the others
        in ``[-1, 1]``, from the comparisons that parsed; a response with none is an error.
        """
        if self.mode == "pointwise":
            flat = self._pointwise([RewardItem(p, r, ref) for p, rs, ref in groups for r in rs])
            out, start = [], 0
            for _, responses, _ in groups:
                out.append(flat[start:start + len(responses)])
                start += len(responses)
            return out
        pairs = [(g, i, j) for g, (_, rs, _) in enumerate(groups)
                 for i in range(len(rs)) for j in range(i + 1, len(rs))]
        prefs = self.prefer([groups[g][0] for g, _, _ in pairs],
                            [groups[g][1][i] for g, i, _ in pairs],
                            [groups[g][1][j] for g, _, j in pairs],
                            [groups[g][2] for g, _, _ in pairs])
        totals: list[list[list[float]]] = [[[] for _ in rs] for _, rs, _ in groups]
        errors = [[0] * len(rs) for _, rs, _ in groups]
        for (g, i, j), pref in zip(pairs, prefs, strict=True):
            if pref.ok and pref.value is not None:
                totals[g][i].append(pref.value)
                totals[g][j].append(-pref.value)
            else:
                errors[g][i] += 1
                errors[g][j] += 1
        return [[_mean_preference(t, e) for t, e in zip(group_totals, group_errors, strict=True)]
                for group_totals, group_errors in zip(totals, errors, strict=True)]


def _mean_preference(prefs: list[float], errors: int) -> Score:
    """A candidate's round-robin score; a lone candidate (nothing to compare) scores 0."""
    if prefs or not errors:
        return Score(sum(prefs) / len(prefs) if prefs else 0.0,
                     info={"comparisons": len(prefs), "errors": errors})
    return Score(None, error=f"judge: none of {errors} comparisons parsed")


def _num(value: float) -> int | float:
    """``10.0`` -> ``10`` for the rubric text (a judge reads "1 to 10", not "1.0 to 10.0")."""
    return int(value) if float(value).is_integer() else value
