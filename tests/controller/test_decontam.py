"""Tier 0: n-gram decontamination removes planted overlaps with the eval set, keeps clean text."""

from __future__ import annotations

import pytest

from rlsys.data.decontam import (
    Decontaminator,
    normalize_text,
    normalize_words,
    text_of,
    word_ngrams,
)

EVAL = [
    "Mia buys 4 boxes with 7 shells in each box, and already had 3 shells. "
    "How many shells does Mia have in total?",
    "A train leaves the station at noon travelling north at sixty miles per hour.",
    "What is 2+2?",  # shorter than 8 words
]


@pytest.fixture()
def decon() -> Decontaminator:
    return Decontaminator(EVAL, n=8)


def test_normalisation() -> None:
    assert normalize_words("Hello, WORLD!  It's 3.5") == ["hello", "world", "it", "s", "3", "5"]
    assert normalize_words("ＡＢＣ_def") == ["abc", "def"]  # NFKC full-width; '_' separates
    assert normalize_text("  A\tb\n\nC ") == "a b c"
    assert text_of([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]) \
        == "hi\nyo"
    with pytest.raises(TypeError, match="string or a list of messages"):
        text_of(3)


def test_word_ngrams() -> None:
    assert word_ngrams(["a", "b", "c", "d"], 3) == {("a", "b", "c"), ("b", "c", "d")}
    assert word_ngrams([], 3) == set()
    assert word_ngrams(["a", "b"], 8) == {("a", "b")}
    with pytest.raises(ValueError, match="n must be >= 1"):
        word_ngrams(["a"], 0)


def test_exact_copy_is_contaminated(decon: Decontaminator) -> None:
    assert decon.is_contaminated(EVAL[0])
    assert decon.is_contaminated(EVAL[1])


def test_case_and_punctuation_changes_are_contaminated(decon: Decontaminator) -> None:
    changed = ("MIA buys 4 boxes -- with 7 shells (in each box) and already had 3 shells; "
               "how many shells does mia have in total")
    assert decon.is_contaminated(changed)
    assert decon.is_contaminated("A   TRAIN leaves the station, at NOON -- travelling north!")


def test_paraphrase_sharing_one_8gram_is_contaminated(decon: Decontaminator) -> None:
    # shares exactly "leaves the station at noon travelling north at" (8 words) with EVAL[1]
    paraphrase = "Yesterday my bus leaves the station at noon travelling north at a slow pace."
    assert decon.is_contaminated(paraphrase)
    # one shared word changed: the longest shared run is 6 words, below n = 8
    seven = "Yesterday my bus leaves the station at noon travelling south at a slow pace."
    assert not decon.is_contaminated(seven)


def test_short_eval_text_copied_inside_a_longer_one(decon: Decontaminator) -> None:
    assert decon.is_contaminated("Quick question for you: what is 2 + 2? Thanks.")
    assert not decon.is_contaminated("What is 2 times 2?")


def test_clean_texts_are_kept(decon: Decontaminator) -> None:
    clean = [
        "Ben shares 48 stamps equally among 8 friends. How many stamps does each friend get?",
        "Write a haiku about autumn leaves falling on a quiet pond.",
        "The station was quiet at noon.",
        "",
    ]
    kept, removed = decon.filter(clean)
    assert kept == clean and removed == 0


def test_filter_counts_removed(decon: Decontaminator) -> None:
    texts = ["Write a poem about the sea.", EVAL[0].upper(), "what is 2 + 2", "Name a colour."]
    kept, removed = decon.filter(texts)
    assert kept == ["Write a poem about the sea.", "Name a colour."]
    assert removed == 2


def test_n_is_configurable() -> None:
    shared4 = "Today leaves the station at dawn"  # shares the 4-gram "leaves the station at"
    assert not Decontaminator(EVAL, n=8).is_contaminated(shared4)
    assert Decontaminator(EVAL, n=4).is_contaminated(shared4)
    with pytest.raises(ValueError, match="n must be >= 1"):
        Decontaminator(EVAL, n=0)


def test_empty_eval_set_flags_nothing() -> None:
    decon = Decontaminator([], n=8)
    assert decon.num_eval_texts == 0
    assert not decon.is_contaminated(EVAL[0])
