"""Label masking on concrete chat examples: decode exactly the tokens that count.

The SmolLM2 template renders each turn as ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` and adds
a default system prompt when the conversation has none.
"""

from __future__ import annotations

import copy

import pytest

from rlsys.data.encode import encode_messages, encode_pair, encode_prompt, encode_sft, encode_text
from rlsys.data.templates import render_chat, render_segments

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Rewrite in passive voice: The team achieved great results."},
    {"role": "assistant", "content": "Great results were achieved by the team."},
    {"role": "user", "content": "And 2+2?"},
    {"role": "assistant", "content": "4"},
]
END = "<|im_end|>\n"


def _counted_spans(tokenizer, encoded) -> list[str]:
    """Decoded maximal runs of counted tokens."""
    spans, run = [], []
    for token, counts in zip(encoded.input_ids, encoded.mask, strict=True):
        if counts:
            run.append(token)
        elif run:
            spans.append(tokenizer.decode(run))
            run = []
    if run:
        spans.append(tokenizer.decode(run))
    return spans


def test_rendered_tokens_are_the_full_chat(tokenizer):
    encoded = encode_messages(tokenizer, CHAT, mask_mode="none", max_len=512)
    assert tokenizer.decode(encoded.input_ids) == render_chat(tokenizer, CHAT)
    assert encoded.mask[0] is False and all(encoded.mask[1:])


def test_prompt_mode_counts_only_final_response(tokenizer):
    encoded = encode_messages(tokenizer, CHAT, mask_mode="prompt", max_len=512)
    assert _counted_spans(tokenizer, encoded) == ["4" + END]


def test_assistant_mode_counts_every_assistant_turn(tokenizer):
    encoded = encode_messages(tokenizer, CHAT, mask_mode="assistant", max_len=512)
    assert _counted_spans(tokenizer, encoded) == [
        "Great results were achieved by the team." + END, "4" + END,
    ]


def test_tool_observations_are_context_and_assistant_turns_are_targets(tokenizer):
    """A tool-use conversation (an environment episode kept as SFT data): the tool's output is
    rendered as a turn of its own and never counted; every assistant turn is."""
    chat = [{"role": "user", "content": "What is 4321 * 17?"},
            {"role": "assistant", "content": '<tool_call>{"name": "calculator"}</tool_call>'},
            {"role": "tool", "name": "calculator", "content": "73457"},
            {"role": "assistant", "content": "\\boxed{73457}"}]
    encoded = encode_messages(tokenizer, chat, mask_mode="assistant", max_len=512)
    assert tokenizer.decode(encoded.input_ids) == render_chat(tokenizer, chat)
    assert "73457<|im_end|>" in render_chat(tokenizer, chat)
    assert _counted_spans(tokenizer, encoded) == [chat[1]["content"] + END,
                                                  chat[3]["content"] + END]


def test_template_mode_masks_only_template_tokens(tokenizer):
    encoded = encode_messages(tokenizer, CHAT, mask_mode="template", max_len=512)
    assert _counted_spans(tokenizer, encoded) == [
        "Be brief.",
        "Rewrite in passive voice: The team achieved great results.",
        "Great results were achieved by the team." + END,
        "And 2+2?",
        "4" + END,
    ]


def test_default_system_prompt_is_template(tokenizer):
    example = {"prompt": "Name a colour.", "response": "Blue."}
    encoded = encode_sft(tokenizer, example, mask_mode="template", max_len=512)
    assert "You are a helpful AI assistant" in tokenizer.decode(encoded.input_ids)
    assert _counted_spans(tokenizer, encoded) == ["Name a colour.", "Blue." + END]


def test_bpe_merge_across_boundary_goes_to_content(tokenizer):
    # "\n" (end of the assistant header) and "  Yo" merge into one token "\n " + " Yo".
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "  Yo!"}]
    encoded = encode_messages(tokenizer, chat, mask_mode="prompt", max_len=512)
    assert tokenizer.decode(encoded.input_ids) == render_chat(tokenizer, chat)
    assert _counted_spans(tokenizer, encoded) == ["\n  Yo!" + END]


def test_truncation_keeps_prefix_and_flags(tokenizer):
    full = encode_messages(tokenizer, CHAT, mask_mode="assistant", max_len=512)
    cut = encode_messages(tokenizer, CHAT, mask_mode="assistant", max_len=20)
    assert cut.truncated and not full.truncated
    assert cut.input_ids == full.input_ids[:20] and cut.mask == full.mask[:20]
    assert cut.num_targets == 0


def test_encode_text_appends_eos(tokenizer):
    encoded = encode_text(tokenizer, "Domain text about finance.", max_len=64)
    assert encoded.input_ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(encoded.input_ids[:-1]) == "Domain text about finance."
    assert encoded.mask == [False] + [True] * (len(encoded) - 1)
    short = encode_text(tokenizer, "Domain text about finance.", max_len=3)
    assert len(short) == 3 and short.truncated


def test_encode_pair_masks_prompt(tokenizer):
    chosen, rejected = encode_pair(
        tokenizer, {"prompt": "2+2?", "chosen": "4", "rejected": "5"}, max_len=256
    )
    assert _counted_spans(tokenizer, chosen) == ["4" + END]
    assert _counted_spans(tokenizer, rejected) == ["5" + END]
    prompt_len = len(encode_prompt(tokenizer, "2+2?"))
    assert chosen.input_ids[:prompt_len] == rejected.input_ids[:prompt_len]
    assert not any(chosen.mask[:prompt_len])


def test_tokenizer_without_template_uses_chatml_default(tokenizer):
    plain = copy.deepcopy(tokenizer)
    plain.chat_template = None
    text = render_chat(plain, CHAT[1:3])
    assert text == (
        "<|im_start|>user\n" + CHAT[1]["content"] + END
        + "<|im_start|>assistant\n" + CHAT[2]["content"] + END
    )
    encoded = encode_messages(plain, CHAT[1:3], mask_mode="prompt", max_len=512)
    assert _counted_spans(plain, encoded) == [CHAT[2]["content"] + END]


def test_segments_reassemble_rendering(tokenizer):
    segments = render_segments(tokenizer, CHAT)
    assert "".join(s.text for s in segments) == render_chat(tokenizer, CHAT)
    kinds = [(s.kind, s.turn) for s in segments if s.kind != "template"]
    assert kinds == [("prompt", 0), ("prompt", 1), ("response", 2), ("response_end", 2),
                     ("prompt", 3), ("response", 4), ("response_end", 4)]


def test_bad_inputs(tokenizer):
    with pytest.raises(ValueError, match="mask_mode"):
        encode_messages(tokenizer, CHAT, mask_mode="all", max_len=64)
    with pytest.raises(ValueError, match="assistant turn"):
        encode_messages(tokenizer, CHAT[:2], mask_mode="prompt", max_len=64)
    with pytest.raises(ValueError, match="'prompt' and 'response'"):
        encode_sft(tokenizer, {"prompt": "x"}, mask_mode="prompt", max_len=64)
    with pytest.raises(ValueError, match="rejected"):
        encode_pair(tokenizer, {"prompt": "x", "chosen": "y"}, max_len=64)
