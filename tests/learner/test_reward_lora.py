"""``RewardLearner`` with LoRA (tiny Llama, one in-process rank): peft wraps the classifier as a
``SEQ_CLS`` task, gradients reach the adapters and the ``score`` head only, held-out pair
accuracy rises, and both saved forms (the merged classifier and the adapter directory) score
in the ``model`` reward exactly as the learner did."""

from __future__ import annotations

import json

import torch
from peft import PeftModel
from transformers import AutoModelForSequenceClassification

from learner.reward import RewardLearner
from rewards.base import RewardItem
from rewards.model import ModelReward
from rlsys.controller.reward_model import encode_pairs, pad_rows
from rlsys.modeling import load_tokenizer
from rlsys.tasks import generate_arithmetic_pairs

LORA = {"r": 8, "alpha": 16.0, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"],
        "modules_to_save": []}


def _pairs(model_dir: str, num: int, seed: int):
    tokenizer = load_tokenizer(model_dir)
    records = generate_arithmetic_pairs(num, seed=seed)
    pairs, kept = encode_pairs(tokenizer, records, max_len=256)
    assert kept == list(range(num))
    pad = tokenizer.pad_token_id
    return (records, pad_rows([c for c, _ in pairs], pad), pad_rows([r for _, r in pairs], pad))


def _accuracy(learner: RewardLearner, chosen, rejected) -> float:
    gaps = learner.forward_rewards(chosen) - learner.forward_rewards(rejected)
    return float((gaps > 0).float().mean())


def test_lora_reward_model_trains_adapters_and_head_only(tiny_model_dir, tmp_path):
    """10 steps at lr 1e-2 on the 4 pairs the full-model test memorises: pair accuracy goes from
    below 1 (the fresh head) to 1. Trainable parameters are exactly the LoRA factors and the
    head's trained copy; training changed every one of them and no base weight."""
    records, chosen, rejected = _pairs(tiny_model_dir, 4, seed=3)
    learner = RewardLearner(model_path=tiny_model_dir, lr=1e-2, seed=0, lora=LORA)
    module = learner._engine.module
    assert learner.info()["lora"] and module.peft_config["default"].task_type == "SEQ_CLS"
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n or "score.modules_to_save." in n
                             for n in trainable), trainable
    assert any("score.modules_to_save." in n for n in trainable)
    frozen_before = {n: p.detach().clone() for n, p in module.named_parameters()
                     if not p.requires_grad}
    trained_before = {n: p.detach().clone() for n, p in module.named_parameters()
                      if p.requires_grad}
    before = _accuracy(learner, chosen, rejected)
    assert before < 1.0  # a fresh head: something left to learn
    first = learner.train_rm([(chosen, rejected)], num_pairs=4)
    for _ in range(9):
        last = learner.train_rm([(chosen, rejected)], num_pairs=4)
    assert last["loss"] < 0.5 * first["loss"], (first, last)
    assert _accuracy(learner, chosen, rejected) == 1.0
    after = dict(module.named_parameters())
    for n, t in frozen_before.items():
        assert torch.equal(after[n].detach(), t), f"frozen {n} changed"
    for n, t in trained_before.items():
        assert not torch.equal(after[n].detach(), t), f"trainable {n} did not change"

    path = learner.save_checkpoint(tmp_path / "rm", training_state=False)
    expected = torch.cat([learner.forward_rewards(chosen), learner.forward_rewards(rejected)])
    items = [RewardItem(prompt=r["prompt"], response=r[key])
             for key in ("chosen", "rejected") for r in records]
    for scored in (path, path / "adapter"):  # merged classifier, then the peft adapter dir
        reward = ModelReward(str(scored), batch_size=3)
        scores = torch.tensor([s.value for s in reward.score(items)])
        torch.testing.assert_close(scores, expected, rtol=0, atol=1e-5, msg=str(scored))
    config = json.loads((path / "adapter" / "adapter_config.json").read_text())
    assert config["task_type"] == "SEQ_CLS" and "score" in config["modules_to_save"]
    # peft reads the adapter dir as it is, on the classifier of the base model
    base = AutoModelForSequenceClassification.from_pretrained(
        tiny_model_dir, num_labels=1, pad_token_id=learner.pad_token_id)
    peft_model = PeftModel.from_pretrained(base, str(path / "adapter")).eval()
    real = chosen.seq_ids > 0
    with torch.no_grad():
        logits = peft_model(input_ids=torch.where(real, chosen.input_ids, learner.pad_token_id),
                            attention_mask=real.long()).logits[:, 0]
    torch.testing.assert_close(logits, expected[:4], rtol=0, atol=1e-5)

