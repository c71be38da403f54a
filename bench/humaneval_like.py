"""Twenty small HumanEval-style problems written for the code-sandbox benchmark.

Each problem has a prompt (signature + docstring), an ``entry_point``, a canonical solution
that must pass, a broken solution that must fail, and ``check(candidate)`` tests.
Data only: nothing here executes code.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One problem; ``canonical`` and ``broken`` are full programs (prompt included)."""

    name: str
    prompt: str
    entry_point: str
    canonical: str
    broken: str
    tests: str


def _p(name: str, signature: str, doc: str, good: str, bad: str, asserts: list[str]) -> Problem:
    prompt = f'{signature}\n    """{doc}"""\n'
    body = "\n".join(f"    assert {a}" for a in asserts)
    entry_point = signature.split()[1].split("(")[0].rstrip(":")
    return Problem(name, prompt, entry_point, prompt + good, prompt + bad,
                   f"def check(candidate):\n{body}\n")


PROBLEMS = [
    _p("has_close", "def has_close(xs: list, t: float) -> bool:",
       "Any two numbers closer than t?",
       "    return any(abs(a - b) < t for i, a in enumerate(xs) for b in xs[i + 1:])\n",
       "    return any(abs(a - b) <= t for a in xs for b in xs)\n",
       ["candidate([1.0, 2.0, 3.9], 0.3) is False", "candidate([1.0, 2.8, 3.0], 0.3) is True",
        "candidate([], 1.0) is False"]),
    _p("sum_product", "def sum_product(xs: list) -> tuple:", "(sum, product) of xs.",
       "    s, p = 0, 1\n    for x in xs:\n        s, p = s + x, p * x\n    return s, p\n",
       "    return sum(xs), 0\n",
       ["candidate([]) == (0, 1)", "candidate([1, 2, 3, 4]) == (10, 24)",
        "candidate([5]) == (5, 5)"]),
    _p("below_zero", "def below_zero(ops: list) -> bool:", "Does the running balance dip < 0?",
       "    b = 0\n    for o in ops:\n        b += o\n        if b < 0:\n            return True\n"
       "    return False\n",
       "    return sum(ops) < 0\n",
       ["candidate([1, 2, -4, 5]) is True", "candidate([1, 2, -3]) is False",
        "candidate([]) is False"]),
    _p("rolling_max", "def rolling_max(xs: list) -> list:", "Running maximum.",
       "    out, m = [], None\n    for x in xs:\n        m = x if m is None else max(m, x)\n"
       "        out.append(m)\n    return out\n",
       "    return sorted(xs)\n",
       ["candidate([1, 3, 2, 5, 4]) == [1, 3, 3, 5, 5]", "candidate([]) == []",
        "candidate([3, 2, 1]) == [3, 3, 3]"]),
    _p("is_palindrome", "def is_palindrome(s: str) -> bool:", "Palindrome test.",
       "    return s == s[::-1]\n", "    return s[0] == s[-1] if s else True\n",
       ["candidate('') is True", "candidate('abba') is True", "candidate('abca') is False"]),
    _p("count_vowels", "def count_vowels(s: str) -> int:", "Number of vowels (aeiou, any case).",
       "    return sum(c in 'aeiouAEIOU' for c in s)\n",
       "    return sum(c in 'aeiou' for c in s)\n",
       ["candidate('hello') == 2", "candidate('AEIOU') == 5", "candidate('xyz') == 0"]),
    _p("fib", "def fib(n: int) -> int:", "n-th Fibonacci number, fib(0) = 0.",
       "    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n",
       "    return n if n < 2 else fib(n - 1) + fib(n - 3)\n",
       ["candidate(0) == 0", "candidate(10) == 55", "candidate(90) == 2880067194370816120"]),
    _p("unique_sorted", "def unique_sorted(xs: list) -> list:", "Sorted unique elements.",
       "    return sorted(set(xs))\n", "    return list(dict.fromkeys(xs))\n",
       ["candidate([5, 3, 5, 2, 3, 3, 9, 0, 123]) == [0, 2, 3, 5, 9, 123]",
        "candidate([]) == []"]),
    _p("word_freq", "def word_freq(text: str) -> dict:", "Word -> count, split on whitespace.",
       "    out = {}\n    for w in text.split():\n        out[w] = out.get(w, 0) + 1\n"
       "    return out\n",
       "    return {w: 1 for w in text.split()}\n",
       ["candidate('a b a') == {'a': 2, 'b': 1}", "candidate('') == {}"]),
    _p("flip_case", "def flip_case(s: str) -> str:", "Swap upper and lower case.",
       "    return s.swapcase()\n", "    return s.upper()\n",
       ["candidate('Hello!') == 'hELLO!'", "candidate('') == ''"]),
    _p("gcd", "def gcd(a: int, b: int) -> int:", "Greatest common divisor.",
       "    while b:\n        a, b = b, a % b\n    return abs(a)\n",
       "    return min(a, b)\n",
       ["candidate(12, 18) == 6", "candidate(7, 13) == 1", "candidate(0, 5) == 5"]),
    _p("is_prime", "def is_prime(n: int) -> bool:", "Primality.",
       "    if n < 2:\n        return False\n    i = 2\n    while i * i <= n:\n"
       "        if n % i == 0:\n            return False\n        i += 1\n    return True\n",
       "    return n % 2 == 1\n",
       ["candidate(2) is True", "candidate(9) is False", "candidate(97) is True",
        "candidate(1) is False"]),
    _p("mean_abs_dev", "def mean_abs_dev(xs: list) -> float:", "Mean absolute deviation.",
       "    m = sum(xs) / len(xs)\n    return sum(abs(x - m) for x in xs) / len(xs)\n",
       "    m = sum(xs) / len(xs)\n    return max(abs(x - m) for x in xs)\n",
       ["abs(candidate([1.0, 2.0, 3.0, 4.0]) - 1.0) < 1e-9",
        "abs(candidate([1.0, 1.0]) - 0.0) < 1e-9",
        "abs(candidate([0.0, 3.0, 3.0]) - 4 / 3) < 1e-9"]),
    _p("parse_nested", "def parse_nested(s: str) -> list:", "Max depth of each paren group.",
       "    out = []\n    for g in s.split():\n        d = m = 0\n        for c in g:\n"
       "            d += 1 if c == '(' else -1\n            m = max(m, d)\n        out.append(m)\n"
       "    return out\n",
       "    return [g.count('(') for g in s.split()]\n",
       ["candidate('(()()) ((())) () ((())()())') == [2, 3, 1, 3]", "candidate('') == []"]),
    _p("char_positions", "def char_positions(s: str, c: str) -> tuple:", "Indices of c in s.",
       "    return tuple(i for i, x in enumerate(s) if x == c)\n",
       "    return [i for i, x in enumerate(s) if x == c]\n",
       ["candidate('banana', 'a') == (1, 3, 5)", "candidate('', 'a') == ()"]),
    _p("safe_div", "def safe_div(a: float, b: float) -> float:", "a / b; ValueError if b == 0.",
       "    if b == 0:\n        raise ValueError('division by zero')\n    return a / b\n",
       "    return a / b if b else 0.0\n",
       ["candidate(6, 3) == 2.0", "_raises(candidate, 1, 0)"]),
    _p("encode_shift", "def encode_shift(s: str) -> str:", "Caesar shift of lowercase by 5.",
       "    return ''.join(chr((ord(c) - 97 + 5) % 26 + 97) for c in s)\n",
       "    return ''.join(chr(ord(c) + 5) for c in s)\n",
       ["candidate('abc') == 'fgh'", "candidate('xyz') == 'cde'"]),
    _p("stack_class", "class MinStack:", "Stack with push, pop and get_min.",
       "    def __init__(self):\n        self.items = []\n    def push(self, x):\n"
       "        self.items.append(x)\n    def pop(self):\n        return self.items.pop()\n"
       "    def get_min(self):\n        return min(self.items)\n",
       "    def __init__(self):\n        self.items = []\n    def push(self, x):\n"
       "        self.items.append(x)\n    def pop(self):\n        return self.items.pop(0)\n"
       "    def get_min(self):\n        return self.items[0]\n",
       ["_stack_ok(candidate)"]),
    _p("sort_by_bits", "def sort_by_bits(xs: list) -> list:", "Sort by popcount, then value.",
       "    return sorted(xs, key=lambda x: (bin(x).count('1'), x))\n",
       "    return sorted(xs)\n",
       ["candidate([1, 5, 2, 3, 4]) == [1, 2, 4, 3, 5]", "candidate([]) == []"]),
    _p("matrix_transpose", "def transpose(m: list) -> list:", "Transpose a list of rows.",
       "    return [list(r) for r in zip(*m)]\n", "    return m[::-1]\n",
       ["candidate([[1, 2, 3], [4, 5, 6]]) == [[1, 4], [2, 5], [3, 6]]",
        "candidate([[1]]) == [[1]]"]),
]

HELPERS = '''
def _raises(fn, *args):
    try:
        fn(*args)
    except ValueError:
        return True
    return False


def _stack_ok(cls):
    s = cls()
    for x in (5, 2, 7):
        s.push(x)
    ok = s.get_min() == 2 and s.pop() == 7 and s.pop() == 2 and s.get_min() == 5
    return ok
'''


def tests_for(problem: Problem) -> str:
    """The full tests string: helpers, ``check`` and the call on the entry point."""
    return f"{HELPERS}\n{problem.tests}\ncheck({problem.entry_point})\n"
