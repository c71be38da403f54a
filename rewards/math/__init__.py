"""Math answer checking: extract a final answer, decide equivalence with sympy, safely.

* ``extract_answer(text)``: the last ``\\boxed{}`` / ``#### x`` / "the answer is x" / math span.
* ``verify(pred, gold, timeout)``: True when the two answers are mathematically equivalent.
* ``verify_batch(pairs, timeout, workers)``: many at once over a process pool.

Model text is never given to ``eval``, ``sympify`` or ``parse_expr``: our own tokenizer and
parser build sympy objects from a whitelist, with size limits checked before computing, in
worker processes that are killed past ``timeout``. Trivial cases (identical strings, plain
numbers) are decided here without a worker; verdicts are cached (LRU).
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Iterable
from fractions import Fraction
from typing import TYPE_CHECKING

from rewards.math.extract import clean_answer, extract_answer, has_boxed
from rewards.math.lexer import MAX_ANSWER_CHARS

if TYPE_CHECKING:
    from rewards.math.pool import VerifierPool

__all__ = ["extract_answer", "verify", "verify_batch", "clean_answer", "has_boxed",
           "cache_clear"]

_CACHE_SIZE = 65_536
_cache: OrderedDict[tuple[str, str], bool] = OrderedDict()
_cache_lock = threading.Lock()
_pools: dict[int, VerifierPool] = {}
_pools_lock = threading.Lock()
_PLAIN_NUMBER = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)")


def _pool(workers: int | None) -> VerifierPool:
    from rewards.math.pool import VerifierPool

    with _pools_lock:
        key = workers or 0
        if key not in _pools:
            _pools[key] = VerifierPool(workers)
        return _pools[key]


def _fast_verdict(pred: str, gold: str) -> bool | None:
    """Decide without a worker when trivial: None means 'ask a worker'."""
    if pred is None or gold is None or not pred.strip() or not gold.strip():
        return False
    if len(pred) > MAX_ANSWER_CHARS or len(gold) > MAX_ANSWER_CHARS:
        return False
    p, g = re.sub(r"\s+", "", pred), re.sub(r"\s+", "", gold)
    if p == g:
        return True
    if _PLAIN_NUMBER.fullmatch(p) and _PLAIN_NUMBER.fullmatch(g):
        # Both exact terminating decimals: an exact comparison is the whole story.
        return Fraction(p) == Fraction(g)
    return None


def _cached(key: tuple[str, str]) -> bool | None:
    with _cache_lock:
        verdict = _cache.get(key)
        if verdict is not None:
            _cache.move_to_end(key)
        return verdict


def _remember(key: tuple[str, str], verdict: bool) -> None:
    with _cache_lock:
        _cache[key] = verdict
        if len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)


def cache_clear() -> None:
    """Forget every cached verdict (benchmarks measure a cold cache)."""
    with _cache_lock:
        _cache.clear()


def verify(pred: str, gold: str, timeout: float = 5.0) -> bool:
    """True when ``pred`` and ``gold`` (final answers) are mathematically equivalent.

    Never raises for bad model text and returns False past ``timeout`` seconds (plus a little
    process overhead); safe to call from any thread.
    """
    if not isinstance(pred, str) or not isinstance(gold, str):
        return False
    pred, gold = clean_answer(pred), clean_answer(gold)
    fast = _fast_verdict(pred, gold)
    if fast is not None:
        return fast
    key = (pred, gold)
    cached = _cached(key)
    if cached is not None:
        return cached
    verdict = _pool(None).verdict(pred, gold, timeout, queue_counts=True)
    if verdict is None:  # a timeout depends on the load: never remembered
        return False
    _remember(key, verdict)
    return verdict


def verify_batch(pairs: Iterable[tuple[str, str]], timeout: float = 5.0,
                 workers: int | None = None, use_cache: bool = True,
                 on_timeout: bool | None = False) -> list[bool | None]:
    """``[verify(p, g) for p, g in pairs]`` over a pool of ``workers`` processes (default:
    one per core), deduplicating repeated pairs and using the LRU cache unless disabled.
    A comparison past ``timeout`` gives ``on_timeout`` (False, or None to tell timeouts
    apart) and is never cached."""
    results: list[bool | None] = []
    todo: dict[tuple[str, str], list[int]] = {}
    for i, (pred, gold) in enumerate(pairs):
        if not isinstance(pred, str) or not isinstance(gold, str):
            results.append(False)
            continue
        pred, gold = clean_answer(pred), clean_answer(gold)
        verdict = _fast_verdict(pred, gold)
        if verdict is None and use_cache:
            verdict = _cached((pred, gold))
        results.append(verdict)
        if verdict is None:
            todo.setdefault((pred, gold), []).append(i)
    keys = list(todo)
    verdicts = _pool(workers).verdicts(keys, timeout) if keys else []
    for key, verdict in zip(keys, verdicts, strict=True):
        if use_cache and verdict is not None:
            _remember(key, verdict)
        for i in todo[key]:
            results[i] = on_timeout if verdict is None else verdict
    return [v if v is None else bool(v) for v in results]
