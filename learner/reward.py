"""``RewardLearner``: a ``Learner`` rank whose model is a scalar-head reward model, trained with
the Bradley-Terry pairwise loss under DeepSpeed ZeRO 0-3.

The model is Hugging Face's ``AutoModelForSequenceClassification`` with ``num_labels=1`` built
on the policy's architecture (the backbone from the given directory, a fresh ``score`` head):
it pools the last token that is not the pad token, and its config records that pad id, so the
saved directory loads with ``AutoModelForSequenceClassification`` and scores exactly as trained
(``rewards.model.ModelReward``). Rows are right-padded with the pad id and an attention mask
(no packing: the classifier pools one position per row).

Micro-batches of ``train_rm`` are ``(chosen, rejected)`` ``TokenBatch`` pairs; only
``input_ids`` and ``seq_ids`` (> 0 on real tokens) are read. This module does not render chats
or tokenize (``rlsys.controller.reward_model``).

LoRA (``lora`` given): the classifier is wrapped by peft as a ``SEQ_CLS`` task; adapters train
on ``target_modules`` and the fresh ``score`` head trains in full (``modules_to_save``). A final
save (``training_state=False``) writes the merged classifier, which the ``model`` reward loads
as it is, and the adapter directory in ``adapter/`` (``PeftModel.from_pretrained`` on
``AutoModelForSequenceClassification`` of the base reads it; so does ``ModelReward``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from learner.learner import Learner
from learner.loading import _with_zero3_init, maybe_tokenizer
from learner.lora import wrap_lora
from learner.losses import LossFn, stack_pair
from rlsys.algo.reward_model import bradley_terry
from rlsys.types import TokenBatch

if TYPE_CHECKING:
    from transformers import PreTrainedModel


def load_reward_model(model_dir: str, ds_config: dict[str, Any], *, dtype: torch.dtype,
                      pad_token_id: int, gradient_checkpointing: bool = False) -> torch.nn.Module:
    """``AutoModelForSequenceClassification`` (``num_labels=1``, ``pad_token_id`` set) from a
    causal-LM or reward-model directory; ZeRO-3-partitioned while loading when asked."""
    from transformers import AutoConfig, AutoModelForSequenceClassification
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING,
    )

    def load() -> PreTrainedModel:
        return AutoModelForSequenceClassification.from_pretrained(
            model_dir, num_labels=1, pad_token_id=pad_token_id, dtype=dtype,
            attn_implementation="sdpa")

    # zero.Init patches module classes as it enters: import the classifier class first.
    _ = MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING[type(AutoConfig.from_pretrained(model_dir))]
    if ds_config["zero_optimization"]["stage"] == 3:
        model = _with_zero3_init(model_dir, ds_config, load)
    else:
        model = load()
    model.config.pad_token_id = pad_token_id
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model.train()


def rm_loss_fn(*, margin: float, num_pairs: int) -> LossFn:
    """Bradley-Terry loss on a ``(chosen, rejected)`` micro-batch whose (2B,) rewards are the
    chosen rows then the rejected rows; this micro-batch's share of the mean over
    ``num_pairs`` (global). Metrics: ``accuracy``, ``margin``, ``chosen``, ``rejected`` (global
    means over pairs)."""
    if num_pairs < 1:
        raise ValueError(f"num_pairs must be a positive global count, got {num_pairs}")

    def loss_fn(pair: tuple, rewards: torch.Tensor) -> tuple[torch.Tensor, dict]:
        rows = pair[0].input_ids.shape[0]
        losses, diag = bradley_terry(rewards[:rows], rewards[rows:], margin=margin)
        metrics = {f"rm/{k}": v * (rows / num_pairs) for k, v in diag.items()}
        return losses.sum() / num_pairs, metrics

    return loss_fn


class RewardLearner(Learner):
    """One rank of a reward model; constructor arguments as ``Learner`` (``value_head`` must
    stay False; ``lora`` wraps the classifier, see the module docstring). Adds
    ``forward_rewards`` and ``train_rm``."""

    def __init__(self, *, lora: dict[str, Any] | None = None, **kwargs: Any) -> None:
        # The base class would wrap a causal LM; the classifier is wrapped in _load_model.
        self._classifier_lora = lora
        super().__init__(lora=None, **kwargs)

    def _load_model(
        self, ds_config: dict[str, Any], *, value_head: bool, dtype: torch.dtype,
        gradient_checkpointing: bool,
    ) -> torch.nn.Module:
        """The scalar-head classifier (see the module docstring)."""
        if value_head:
            raise ValueError("RewardLearner has its own scalar head; value_head must be False")
        tokenizer = maybe_tokenizer(self.model_dir)
        if tokenizer is None:
            raise ValueError(f"a reward model needs the tokenizer beside {self.model_dir}")
        self.pad_token_id = int(tokenizer.pad_token_id)
        model = load_reward_model(self.model_dir, ds_config, dtype=dtype,
                                  pad_token_id=self.pad_token_id,
                                  gradient_checkpointing=gradient_checkpointing)
        if self._classifier_lora:
            model = wrap_lora(model, self._classifier_lora, value_head=False,
                              model_dir=self.model_dir, classifier=True)
        return model

    def _rewards(self, tokens: TokenBatch) -> torch.Tensor:  # (B,)
        real = tokens.seq_ids > 0
        input_ids = torch.where(real, tokens.input_ids, self.pad_token_id)
        logits = self._engine(input_ids=input_ids, attention_mask=real.long()).logits
        return logits[:, 0].float()

    @torch.no_grad()
    def forward_rewards(self, batch: TokenBatch) -> torch.Tensor:
        """(B,) float32 CPU scalar rewards of right-padded rows under the current weights."""
        self._engine.eval()
        return self._rewards(batch.to(self.device)).cpu()

    def _forward(self, micro_batch: Any) -> tuple[Any, torch.Tensor]:
        """A ``(chosen, rejected)`` pair -> (the pair, (2B,) rewards: chosen rows first)."""
        return micro_batch, self._rewards(stack_pair(micro_batch[0], micro_batch[1]))

    def train_rm(
        self,
        micro_batches: Sequence[tuple[TokenBatch, TokenBatch]],
        *,
        margin: float = 0.0,
        num_pairs: int,
    ) -> dict[str, float]:
        """One optimizer step of the Bradley-Terry loss over ``(chosen, rejected)`` micro-batches;
        ``num_pairs``: the global pair count of the step."""
        return self._optimizer_step(micro_batches, rm_loss_fn(margin=margin, num_pairs=num_pairs),
                                    "train_rm")
