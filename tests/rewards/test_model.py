"""ModelReward with a tiny random Llama classifier and an offline word-level tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForSequenceClassification, PreTrainedTokenizerFast

from rewards import get_reward
from rewards.base import RewardItem
from rewards.model import ModelReward

TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> "
            "{% endfor %}")
CORPUS = ["what is two plus two", "the answer is four", "the answer is five", "User Assistant",
          "I do not know", "hello there how are you", "fine thanks : ."]
ITEMS = [RewardItem("what is two plus two", "the answer is four"),
         RewardItem("what is two plus two", "five"),
         RewardItem("hello", "I do not know the answer is five the answer is four"),
         RewardItem("hello there how are you", "fine thanks"),
         RewardItem("what", "")]


def _save(path: Path, chat_template: str | None, pad: bool, num_labels: int = 1) -> Path:
    """A word-level tokenizer trained on CORPUS plus a 2-layer random Llama classifier."""
    specials = ["<unk>", "<pad>", "<eos>", "<|user|>", "<|assistant|>", "<|end|>"]
    raw = Tokenizer(models.WordLevel(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    raw.train_from_iterator(CORPUS, trainers.WordLevelTrainer(special_tokens=specials))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>",
                                        eos_token="<eos>", pad_token="<pad>" if pad else None)
    tokenizer.add_special_tokens({"additional_special_tokens": specials[3:]})
    if chat_template:
        tokenizer.chat_template = chat_template
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=128, num_labels=num_labels,
                         pad_token_id=tokenizer.pad_token_id)
    LlamaForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def chat_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    return _save(tmp_path_factory.mktemp("rm_chat"), TEMPLATE, pad=True)


def test_batched_scores_equal_one_by_one(chat_dir: Path) -> None:
    batched = ModelReward(str(chat_dir), batch_size=4).score(ITEMS)
    single = ModelReward(str(chat_dir), batch_size=1).score(ITEMS)
    assert all(s.ok for s in batched + single)
    b = torch.tensor([s.value for s in batched])
    s = torch.tensor([s.value for s in single])
    torch.testing.assert_close(b, s, rtol=1e-5, atol=1e-5)
    assert len(set(b.tolist())) == len(ITEMS)  # the scores depend on the text


def test_chat_template_is_used_and_matches_a_direct_forward(chat_dir: Path) -> None:
    reward = get_reward("model", path=str(chat_dir))
    text = reward.render("what is two plus two", "four")
    assert text == "<|user|> what is two plus two <|end|> <|assistant|> four <|end|> "
    ids = reward.tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        expected = reward.model(input_ids=ids).logits[0, 0].item()
    [score] = reward.score([RewardItem("what is two plus two", "four")])
    assert score.value == pytest.approx(expected, rel=1e-6)


def test_plain_format_without_template_and_eos_as_pad(tmp_path: Path) -> None:
    reward = ModelReward(str(_save(tmp_path, None, pad=False)), batch_size=2)
    assert reward.render("hi", "yo") == "User: hi\nAssistant: yo"
    assert reward.tokenizer.pad_token == "<eos>"
    batched = [s.value for s in reward.score(ITEMS)]
    single = [reward.score([item])[0].value for item in ITEMS]
    torch.testing.assert_close(torch.tensor(batched), torch.tensor(single), rtol=1e-5,
                               atol=1e-5)


def test_truncation_to_max_length(chat_dir: Path) -> None:
    reward = ModelReward(str(chat_dir), max_length=6)
    long = RewardItem("what is two plus two", "the answer is four " * 50)
    prefix = RewardItem("what is two plus two", "the answer is five")  # same first 6 tokens
    a, b = reward.score([long, prefix])
    assert a.value == pytest.approx(b.value, rel=1e-6)


def test_bad_heads_and_arguments_are_refused(tmp_path: Path, chat_dir: Path) -> None:
    with pytest.raises(ValueError, match="num_labels=2"):
        ModelReward(str(_save(tmp_path, TEMPLATE, pad=True, num_labels=2)))
    with pytest.raises(ValueError, match="batch_size"):
        ModelReward(str(chat_dir), batch_size=0)
