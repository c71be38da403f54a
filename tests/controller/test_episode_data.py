"""Tier 0: rejection sampling with an environment keeps rewarded, finished, clean, distinct
episodes as whole SFT conversations (hand-made trajectories, no Ray), and the kept records load
and encode as SFT data with the tool observations masked out."""

from __future__ import annotations

import json

import pytest

from rlsys.controller.episode_data import accept_episodes
from rlsys.data.decontam import Decontaminator
from rlsys.data.sources import load_records
from rlsys.types import Completion

EVAL_PROMPT = "Mia buys 4 boxes with 7 shells in each box and already had 3 shells in total"
RECORDS = [{"prompt": "What is 4321 * 17?", "answer": "73457"}, {"prompt": "Compute 96 / 8."}]


def episode(index: int, turns: list[str], reward: float, truncated: bool = False) -> Completion:
    """A completion carrying a trajectory: user prompt, then assistant turns each answered by a
    tool observation except the last."""
    messages: list[dict] = [{"role": "system", "content": "Use tools."},
                            {"role": "user", "content": RECORDS[index]["prompt"]}]
    for i, text in enumerate(turns):
        messages.append({"role": "assistant", "content": text})
        if i < len(turns) - 1:
            messages.append({"role": "tool", "name": "calculator", "content": f"obs {i}"})
    trajectory = {"messages": messages, "reward": reward, "truncated": truncated}
    return Completion(prompt_index=index, prompt_ids=[1], response_ids=[2], text=turns[-1],
                      logprobs=[0.0], finish_reason="stop", trajectory=trajectory)


def test_accept_episodes_threshold_truncation_leak_and_duplicates() -> None:
    call, answer = '<tool_call>{"name": "calculator"}</tool_call>', "\\boxed{73457}"
    completions = [
        episode(0, [call, answer], 1.0),
        episode(0, [call.upper(), answer + " "], 1.0),  # same normalised turns -> duplicate
        episode(0, [answer], 0.0),                      # below threshold
        episode(0, [call, call], 1.0, truncated=True),  # hit a cap
        episode(1, [EVAL_PROMPT], 1.0),                 # an assistant turn leaks the eval set
        episode(1, [call, answer], 1.0),                # same turns, other prompt -> kept
    ]
    kept, dropped = accept_episodes(RECORDS, completions, threshold=1.0,
                                    decontam=Decontaminator([EVAL_PROMPT]))
    assert dropped == {"duplicate": 1, "below_threshold": 1, "truncated": 1, "contaminated": 1}
    assert [k["prompt"] for k in kept] == [RECORDS[0]["prompt"], RECORDS[1]["prompt"]]
    assert kept[0]["answer"] == "73457" and "answer" not in kept[1]
    assert [m["role"] for m in kept[0]["messages"]] == ["system", "user", "assistant", "tool",
                                                        "assistant"]
    assert kept[0]["messages"][3] == {"role": "tool", "name": "calculator", "content": "obs 0"}
    # without a decontaminator the leak passes
    kept, dropped = accept_episodes(RECORDS, completions, threshold=1.0)
    assert len(kept) == 3 and "contaminated" not in dropped
    # a completion without a trajectory is a programming error, not a silent drop
    bare = Completion(0, [1], [2], "x", [0.0], "stop")
    with pytest.raises(ValueError, match="without a trajectory"):
        accept_episodes(RECORDS, [bare], threshold=0.0)


def test_kept_episodes_load_as_sft_conversations(tmp_path, tiny_model_dir) -> None:
    from rlsys.data.encode import encode_messages
    from rlsys.modeling import load_tokenizer

    tokenizer = load_tokenizer(tiny_model_dir)

    kept, _ = accept_episodes(RECORDS, [episode(0, ["call", "\\boxed{73457}"], 1.0)],
                              threshold=1.0)
    path = tmp_path / "rs.jsonl"
    path.write_text("".join(json.dumps(k) + "\n" for k in kept))
    record = load_records(str(path)).records[0]
    encoded = encode_messages(tokenizer, record["messages"], mask_mode="assistant", max_len=256)
    counted = tokenizer.decode([t for t, m in zip(encoded.input_ids, encoded.mask, strict=True)
                                if m])
    assert "call" in counted and "73457" in counted and "obs 0" not in counted
