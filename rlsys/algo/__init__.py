"""Pure tensor math for post-training: log-probs, advantages, policy objectives, loss
aggregation, KL estimators, value loss, DPO losses and NLL.

Three independent registries make up an RL recipe (``ADVANTAGES`` x ``POLICY_OBJECTIVES`` x
``AGGREGATIONS``); e.g. GRPO = ``grpo`` + ``ppo_clip`` + ``seq_mean_token_mean``, Dr.GRPO =
``dr_grpo`` + ``ppo_clip`` + ``seq_mean_token_sum_norm``. Everything here imports only torch and
``rlsys.registry``: no ray, deepspeed, vllm, config objects, logging or torch.distributed.
"""

from rlsys.algo.advantages import (
    ADVANTAGES,
    discounted_returns,
    group_statistics,
    masked_mean,
    masked_whiten,
    sequence_scores,
)
from rlsys.algo.aggregation import AGGREGATIONS
from rlsys.algo.dpo import DPO_LOSSES, sequence_logps
from rlsys.algo.kl import KL_ESTIMATORS, kl_penalty_rewards
from rlsys.algo.logprobs import entropy_from_logits, token_logprobs
from rlsys.algo.nll import masked_nll
from rlsys.algo.policy import POLICY_OBJECTIVES, truncated_is_weights
from rlsys.algo.value import clipped_value_loss

__all__ = [
    "ADVANTAGES",
    "AGGREGATIONS",
    "DPO_LOSSES",
    "KL_ESTIMATORS",
    "POLICY_OBJECTIVES",
    "clipped_value_loss",
    "discounted_returns",
    "entropy_from_logits",
    "group_statistics",
    "kl_penalty_rewards",
    "masked_mean",
    "masked_nll",
    "masked_whiten",
    "sequence_logps",
    "sequence_scores",
    "token_logprobs",
    "truncated_is_weights",
]
