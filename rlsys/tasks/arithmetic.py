"""Generated arithmetic word problems with worked solutions ending in ``\\boxed{}``.

Used by the CPU quickstart: SFT on the worked solutions, GRPO on the prompts, held-out accuracy
checked by the sympy verifier. Deterministic for a seed; the ``split`` argument draws disjoint
problem streams so train and eval never share a problem. Pure Python, no I/O.
"""

from __future__ import annotations

import random
from collections.abc import Callable

_NAMES = ["Tom", "Ana", "Ben", "Mia", "Leo", "Zoe", "Sam", "Eva", "Max", "Ivy"]
_ITEMS = ["apples", "books", "coins", "cards", "pens", "stamps", "shells", "marbles"]


def _add_sub(rng: random.Random) -> tuple[str, str, int]:
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    a, b = rng.randint(5, 40), rng.randint(2, 30)
    c = rng.randint(1, a + b - 1)
    q = (f"{name} has {a} {item}. {name} gets {b} more and then gives away {c}. "
         f"How many {item} does {name} have now?")
    s = f"{a} + {b} = {a + b}. {a + b} - {c} = {a + b - c}."
    return q, s, a + b - c


def _mul_add(rng: random.Random) -> tuple[str, str, int]:
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    boxes, per, extra = rng.randint(2, 9), rng.randint(2, 12), rng.randint(1, 20)
    q = (f"{name} buys {boxes} boxes with {per} {item} in each box, and already had {extra} "
         f"{item}. How many {item} does {name} have in total?")
    s = f"{boxes} * {per} = {boxes * per}. {boxes * per} + {extra} = {boxes * per + extra}."
    return q, s, boxes * per + extra


def _share(rng: random.Random) -> tuple[str, str, int]:
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    friends, each = rng.randint(2, 8), rng.randint(2, 15)
    total = friends * each
    q = (f"{name} shares {total} {item} equally among {friends} friends. "
         f"How many {item} does each friend get?")
    s = f"{total} / {friends} = {each}."
    return q, s, each


def _two_step_sub(rng: random.Random) -> tuple[str, str, int]:
    name = rng.choice(_NAMES)
    price, qty, paid = rng.randint(2, 9), rng.randint(2, 6), 0
    cost = price * qty
    paid = cost + rng.randint(1, 30)
    q = (f"{name} buys {qty} pencils that cost {price} dollars each and pays with {paid} dollars. "
         f"How much change does {name} get?")
    s = f"{qty} * {price} = {cost}. {paid} - {cost} = {paid - cost}."
    return q, s, paid - cost


_TEMPLATES: list[Callable[[random.Random], tuple[str, str, int]]] = [
    _add_sub, _mul_add, _share, _two_step_sub]


def generate_arithmetic(num: int = 200, seed: int = 0, split: str = "train") -> list[dict]:
    """Return ``num`` records ``{prompt, response, answer}`` (``response`` is a worked solution).

    ``split`` selects a disjoint stream: train and eval records never repeat a prompt.

    >>> r = generate_arithmetic(2, seed=1)[0]
    >>> r["response"].endswith("}.") and "\\\\boxed{" in r["response"]
    True
    """
    if num < 1:
        raise ValueError(f"arithmetic generator: num must be >= 1, got {num}")
    rng = random.Random(f"arithmetic:{seed}")
    seen: set[str] = set()
    records: dict[str, list[dict]] = {"train": [], "eval": []}
    guard = 0
    while len(records[split]) < num:
        guard += 1
        if guard > 100 * num + 1000:
            raise ValueError(f"arithmetic generator: cannot make {num} distinct problems")
        question, steps, answer = rng.choice(_TEMPLATES)(rng)
        if question in seen:
            continue
        seen.add(question)
        # hash-free deterministic split: every 5th distinct problem goes to eval
        which = "eval" if len(seen) % 5 == 0 else "train"
        response = f"{steps} The answer is \\boxed{{{answer}}}."
        records[which].append({"prompt": question, "response": response, "answer": str(answer)})
    return records[split][:num]


def generate_arithmetic_text(num: int = 200, seed: int = 0, split: str = "train") -> list[dict]:
    """Plain-text documents (``{text}``) of problems with their worked solutions, for CPT."""
    return [{"text": f"Question: {r['prompt']}\nSolution: {r['response']}"}
            for r in generate_arithmetic(num, seed, split)]


def generate_arithmetic_pairs(num: int = 200, seed: int = 0, split: str = "train") -> list[dict]:
    """Preference pairs ``{prompt, chosen, rejected}``: the correct worked solution is chosen,
    the same solution with a wrong final answer (off by 1..9) is rejected — a clear signal."""
    rng = random.Random(f"arithmetic-pairs:{seed}")
    pairs = []
    for r in generate_arithmetic(num, seed, split):
        wrong = int(r["answer"]) + rng.choice([-1, 1]) * rng.randint(1, 9)
        rejected = r["response"].replace(f"\\boxed{{{r['answer']}}}", f"\\boxed{{{wrong}}}")
        pairs.append({"prompt": r["prompt"], "chosen": r["response"], "rejected": rejected,
                      "answer": r["answer"]})
    return pairs
