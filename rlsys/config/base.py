"""The base of the typed recipe: the ``Strict`` pydantic model (frozen, unknown keys refused)
and the names the schema's sections share (stage kinds, formats, merge methods).

Only declarations; ``rlsys.config.schema`` re-exports all of it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

SFT_KINDS = ("cpt", "sft")
RL_KINDS = ("ppo", "grpo", "rloo", "reinforce_pp")
DATA_GEN_KINDS = ("rejection_sampling", "preference_pairs", "self_instruct")
STAGE_KINDS = (*SFT_KINDS, "dpo", *RL_KINDS, "eval", *DATA_GEN_KINDS, "rm", "merge")
#: merge methods (``rlsys.algo.merge.MERGE_METHODS``)
MERGE_METHODS = ("linear", "task_arithmetic", "ties", "slerp")
#: canonical record fields a source's ``fields`` may map (``rlsys.data.sources.CANONICAL_FIELDS``)
CANONICAL_FIELDS = ("prompt", "response", "messages", "chosen", "rejected", "text", "answer")
#: file formats (``rlsys.data.sources.FORMATS``)
SOURCE_FORMATS = ("jsonl", "json", "parquet", "hf_disk", "hf_json", "hf_parquet")
#: stage kinds that take ``batch_size`` (examples per optimizer step)
BATCH_KINDS = (*SFT_KINDS, "dpo", "rm")
#: the advantage estimator each RL stage kind uses unless ``algo.estimator`` says otherwise
DEFAULT_ESTIMATOR = {"ppo": "gae", "grpo": "grpo", "rloo": "rloo", "reinforce_pp": "reinforce_pp"}


class Strict(BaseModel):
    """Base: frozen, unknown keys refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")
