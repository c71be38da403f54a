"""build_stage_data: a joint CPT + SFT stage, a DPO stage, and batches from the sampler."""

from __future__ import annotations

import json

import pytest

from rlsys.data.dataset import SourceSpec, build_sft_examples, build_stage_data, collate_examples
from rlsys.data.mixture import batches


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_joint_cpt_and_sft_stage(tmp_path, tokenizer):
    text = _jsonl(tmp_path / "text.jsonl", [{"body": f"Fact number {i}. " * (i + 1)}
                                           for i in range(6)])
    sft = _jsonl(tmp_path / "sft.jsonl", [{"prompt": f"Q{i}?", "response": f"A{i}."}
                                          for i in range(4)] + [{"prompt": "no response"}])
    data = build_stage_data(
        [SourceSpec("cpt", text, "text", weight=0.5, fields={"text": "body"}),
         {"name": "it", "path": sft, "kind": "sft", "weight": 0.5, "on_error": "skip"}],
        tokenizer, mask_mode="prompt", max_len=24, seed=0, num_samples=40,
    )
    assert len(data.examples["cpt"]) == 6 and len(data.examples["it"]) == 4
    assert data.stats["it"].skipped == 1
    assert data.stats["cpt"].truncated == sum(len(tokenizer(f"Fact number {i}. " * (i + 1))
                                                  ["input_ids"]) + 1 > 24 for i in range(6))
    assert {name for name, _ in data.sampler} == {"cpt", "it"}
    data.sampler.load_state_dict({**data.sampler.state_dict(), "drawn": 0})
    first = next(batches(data.sampler, 8))
    batch = collate_examples(data.take(first), pad_id=tokenizer.pad_token_id, max_tokens=64)
    assert batch.num_tokens() == sum(len(e) for e in data.take(first))
    assert int(batch.mask.sum()) == sum(e.num_targets for e in data.take(first))


def test_pair_stage_and_mixing_rule(tmp_path, tokenizer):
    prefs = _jsonl(tmp_path / "p.jsonl", [{"prompt": "2+2?", "chosen": "4", "rejected": "5"}])
    data = build_stage_data([SourceSpec("prefs", prefs, "pair")], tokenizer, max_len=128)
    chosen, rejected = data.examples["prefs"][0]
    assert chosen.num_targets == rejected.num_targets == 3  # "4"/"5", <|im_end|>, "\n"
    with pytest.raises(ValueError, match="cannot be mixed"):
        build_stage_data([SourceSpec("prefs", prefs, "pair"), SourceSpec("t", prefs, "text")],
                         tokenizer, max_len=128)


def test_encoding_errors_name_the_source(tmp_path, tokenizer):
    texts = _jsonl(tmp_path / "t.jsonl", [{"prompt": "only a prompt"}])
    with pytest.raises(ValueError, match=r"t\.jsonl:line 1: a text record needs text"):
        build_stage_data([SourceSpec("cpt", texts, "text")], tokenizer, max_len=32)


def test_build_sft_examples_shortcut(tmp_path, tokenizer):
    path = _jsonl(tmp_path / "s.jsonl", [{"messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}])
    (example,) = build_sft_examples(path, tokenizer, mask_mode="assistant", max_len=64)
    assert tokenizer.decode([t for t, m in zip(example.input_ids, example.mask, strict=True)
                             if m]) == "hello<|im_end|>\n"
