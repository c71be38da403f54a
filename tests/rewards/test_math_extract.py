"""Answer extraction and LaTeX clean-up (pure string work, milliseconds)."""

import pytest

from rewards.math import clean_answer, extract_answer, has_boxed


@pytest.mark.parametrize("text, expected", [
    (r"so the answer is \boxed{\frac{1}{2}}.", r"\frac{1}{2}"),
    (r"\boxed{1} first, then \boxed{\frac{a^{2}}{b_{1}}}", r"\frac{a^{2}}{b_{1}}"),
    (r"nested \boxed{\{1, \{2\}\}}", r"\{1, \{2\}\}"),
    (r"\fbox{42}", "42"),
    (r"The result: \boxed 5", "5"),
    ("Natalia sold 48 clips.\n#### 72", "72"),
    ("Therefore the final answer is 17.", "17"),
    ("The answer is $x = 5$.", "x = 5"),
    ("Final Answer: The final answer is $12,000,023$. I hope it is correct.", "12000023"),
    (r"$\boxed{2}$ and $\boxed{3}$", "2,3"),
    ("We computed it: $3 + 4 = 7$, so it is $7$", "7"),
    ("首先 3 + 4 = 7，然后 7 + 6 = 13", "13"),
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize("raw, expected", [
    (r"\left( \frac{1}{3} \right)", r"( \frac{1}{3} )"),
    (r"90^\circ", "90"),
    (r"90^{\circ}", "90"),
    (r"50\%", "50%"),
    (r"\$1,000.99", "1000.99"),
    ("7,425,000", "7425000"),
    ("1 000", "1000"),
    (r"11,\! 111,\! 111,\! 100", "11111111100"),
    (r"5 \text{ cm}", "5"),
    (r"10\text{ cm}^2", "10"),
    ("10 square units", "10"),
    (r"\text{Evelyn}", "Evelyn"),
    (r"\mathrm{E}", "E"),
    (r"\dfrac{1}{3}.", r"\dfrac{1}{3}"),
    (r"1\frac12", "(1+1/2)"),
    (r"6 \text{ and } 8", "6,8"),
    (r"x \in [0, 1)", "[0, 1)"),
])
def test_clean_answer(raw, expected):
    assert clean_answer(raw).replace("  ", " ") == expected


def test_no_answer_and_rejections():
    assert extract_answer("") is None
    assert extract_answer("no digits or math in this long sentence about nothing at all") is None
    assert extract_answer("x" * 1_000_001) is None  # over the raw-text limit
    assert has_boxed(r"a \boxed{1}") and not has_boxed("a 1")


def test_thousands_vs_list():
    assert clean_answer("32, 349") == "32, 349"  # comma + space: a list
    assert extract_answer("0,111") == "0.111"     # a decimal comma, not thousands
