"""Single-rank in-process ``RewardLearner`` (gloo, tiny Llama): the Bradley-Terry loss falls on
memorisable pairs, ZeRO-3 computes what ZeRO-0 does, and the saved directory loads with
``AutoModelForSequenceClassification`` and scores with the ``model`` reward exactly as the
learner did (same rendering, padding and pooling)."""

from __future__ import annotations

import pytest
import torch

from learner.reward import RewardLearner
from rewards.base import RewardItem
from rewards.model import ModelReward
from rlsys.controller.reward_model import encode_pairs, pad_rows
from rlsys.modeling import load_tokenizer
from rlsys.tasks import generate_arithmetic_pairs


def _pairs(model_dir: str, num: int = 4):
    tokenizer = load_tokenizer(model_dir)
    records = generate_arithmetic_pairs(num, seed=3)
    pairs, kept = encode_pairs(tokenizer, records, max_len=256)
    assert kept == list(range(num))
    chosen = pad_rows([c for c, _ in pairs], tokenizer.pad_token_id)
    rejected = pad_rows([r for _, r in pairs], tokenizer.pad_token_id)
    return records, chosen, rejected


def _learner(model_dir: str, **overrides) -> RewardLearner:
    return RewardLearner(**{"model_path": model_dir, "lr": 1e-2, "seed": 0, **overrides})


def test_bt_loss_falls_and_the_model_reward_scores_the_same(tiny_model_dir, tmp_path):
    """10 steps on 4 pairs: loss drops below half and every train pair is ranked right; the
    saved dir, scored through ``ModelReward`` (its own rendering and tokenization, batches of
    3 so the padding differs), gives the learner's rewards."""
    records, chosen, rejected = _pairs(tiny_model_dir)
    learner = _learner(tiny_model_dir)
    first = learner.train_rm([(chosen, rejected)], num_pairs=4)
    for _ in range(9):
        last = learner.train_rm([(chosen, rejected)], num_pairs=4)
    assert last["loss"] < 0.5 * first["loss"], (first, last)
    assert last["rm/accuracy"] == 1.0
    path = learner.save_checkpoint(tmp_path / "rm", training_state=False)
    expected = torch.cat([learner.forward_rewards(chosen), learner.forward_rewards(rejected)])
    reward = ModelReward(str(path), batch_size=3)
    items = [RewardItem(prompt=r["prompt"], response=r[key])
             for key in ("chosen", "rejected") for r in records]
    scores = torch.tensor([s.value for s in reward.score(items)])
    torch.testing.assert_close(scores, expected, rtol=0, atol=1e-5)
    assert reward.model.config.num_labels == 1
    assert (scores[:4] > scores[4:]).all()


def test_zero3_matches_zero0(tiny_model_dir):
    """Two steps with a margin: the same losses and rewards under ZeRO-3 (one rank) as ZeRO-0."""
    _, chosen, rejected = _pairs(tiny_model_dir, num=3)
    results = []
    for stage in (0, 3):
        learner = _learner(tiny_model_dir, zero_stage=stage)
        losses = [learner.train_rm([(chosen, rejected)], margin=0.5, num_pairs=3)["loss"]
                  for _ in range(2)]
        results.append((losses, learner.forward_rewards(chosen)))
    assert results[1][0] == pytest.approx(results[0][0], rel=1e-4)
    torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-4, atol=1e-5)


def test_identical_pairs_are_left_out(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir)
    records = [{"prompt": "Add 1 and 2.", "chosen": "3", "rejected": "3"},
               {"prompt": "Add 1 and 2.", "chosen": "3", "rejected": "4"}]
    pairs, kept = encode_pairs(tokenizer, records, max_len=64)
    assert kept == [1] and len(pairs) == 1
