"""Per-stage option sections of the typed recipe (``algo``, ``dpo``, ``generate`` with its
``judge``, ``rm``, ``merge``, ``curriculum``) and the held-out ``eval`` section.

Frozen pydantic models with a description on every field, as the rest of
``rlsys.config.schema`` (which re-exports them and checks how a stage combines them). Only
declarations and their own validators; nothing runs here.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from rlsys.config.base import MERGE_METHODS, Strict


class AlgoConfig(Strict):
    estimator: str | None = Field(
        default=None, description="Advantage estimator (default from kind).")
    objective: str = Field(default="ppo_clip", description="Policy objective registry name.")
    aggregation: str = Field(default="token_mean", description="Loss aggregation registry name.")
    norm_std: bool = Field(default=True, description="GRPO: divide by group std (False = Dr.GRPO).")
    gamma: float = Field(default=1.0, ge=0, le=1, description="Discount.")
    lam: float = Field(default=0.95, ge=0, le=1, description="GAE lambda.")
    clip_low: float = Field(
        default=0.2, gt=0, lt=1, description="PPO lower clip (ratio >= 1-clip_low).")
    clip_high: float = Field(default=0.2, gt=0, description="PPO upper clip (DAPO: > clip_low).")
    clip_c: float | None = Field(default=None, gt=1, description="Dual-clip constant (None: off).")
    value_clip: float = Field(default=0.2, gt=0, description="PPO critic value clip.")
    kl_coef: float = Field(default=0.0, ge=0, description="KL coefficient (0: no reference model).")
    kl_mode: Literal["loss", "reward"] = Field(
        default="loss", description="KL as loss term or reward "
        "penalty.")
    kl_estimator: str = Field(default="k3", description="KL estimator: k1, k2, k3.")
    entropy_coef: float = Field(default=0.0, ge=0, description="Entropy bonus coefficient.")
    ppo_epochs: int = Field(default=1, ge=1, description="Passes over each batch.")
    num_minibatches: int = Field(default=1, ge=1, description="Optimizer steps per epoch.")
    tis_cap: float | None = Field(
        default=None, gt=0, description="Truncated-IS cap for rollout/learner "
        "mismatch (None: off).")
    dynamic_sampling: bool = Field(
        default=False, description="DAPO: drop all-equal-reward groups, refill.")
    max_refill_rounds: int = Field(
        default=3, ge=0, description="Refill attempts for dynamic sampling.")
    overlong_buffer: int = Field(default=0, ge=0, description="DAPO overlong buffer (0: off).")
    overlong_penalty: float = Field(
        default=1.0, ge=0, description="Max penalty of overlong shaping.")
    async_rollout: bool = Field(
        default=False, description="Rollout workers generate into a bounded buffer while the "
        "learner trains; weights reach them between chunks (rlsys.controller.async_rollout).")
    max_staleness: int = Field(
        default=1, ge=1, le=64, description="Async: a sample generated (in part) by a policy "
        "more than this many versions older than the one training is dropped and counted "
        "(async/dropped_stale); the rest are corrected by tis_cap.")
    async_buffer: int | None = Field(
        default=None, ge=1, le=64, description="Async: generations (prompts_per_step prompts "
        "each) kept in flight across the rollout pool (None: max_staleness).")
    partial_rollout_chunk: int = Field(
        default=0, ge=0, description="Async: tokens generated between weight pulls, so a "
        "generation in flight continues on new weights (partial rollouts; each token's "
        "version is recorded); 0: a response keeps the weights it started with. With env: "
        "new weights load between turns; leave it 0.")

    @model_validator(mode="after")
    def _rules(self) -> AlgoConfig:
        if not self.async_rollout:
            extra = [k for k in ("async_buffer", "partial_rollout_chunk")
                     if getattr(self, k)] + (["max_staleness"] if self.max_staleness != 1 else [])
            if extra:
                raise ValueError(f"{', '.join(extra)}: only used with async_rollout: true")
        elif self.max_staleness > 1 and self.tis_cap is None:
            raise ValueError(f"max_staleness: {self.max_staleness} trains on samples up to "
                             f"{self.max_staleness} policy versions old; set tis_cap (e.g. 2.0) "
                             f"so truncated importance sampling corrects them")
        return self


class DPOConfig(Strict):
    loss: str = Field(default="sigmoid", description="DPO loss: sigmoid, ipo, cdpo.")
    beta: float = Field(default=0.1, gt=0, description="DPO temperature beta.")
    label_smoothing: float = Field(
        default=0.0, ge=0, lt=0.5, description="cDPO label noise epsilon.")


class EvalConfig(Strict):
    sources: list[str] = Field(default_factory=list, description="Eval sources (default: all "
                                                                 "split=eval sources).")
    num_prompts: int | None = Field(default=None, ge=1, description="Limit prompts per source.")
    k: int = Field(default=1, ge=1, description="Samples per prompt (pass@k, maj@k).")
    temperature: float = Field(default=0.0, ge=0, description="0 = greedy (then k must be 1).")
    max_new_tokens: int = Field(default=64, ge=1, description="Max response tokens.")

    @model_validator(mode="after")
    def _greedy(self) -> EvalConfig:
        if self.temperature == 0 and self.k > 1:
            raise ValueError("greedy eval (temperature 0) needs k = 1")
        return self


class JudgeConfig(Strict):
    model: str = Field(..., description="Judge model: a short name (e.g. smollm2) or a local HF "
                                        "directory.")
    engine: Literal["hf", "vllm"] = Field(
        default="hf", description="Rollout engine serving the judge.")
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="Extra engine args.")
    num_workers: int = Field(default=1, ge=1, description="Judge worker actors.")
    num_cpus_per_worker: float = Field(default=1.0, ge=0, description="Ray CPUs per judge worker.")
    mode: Literal["pointwise", "pairwise"] = Field(
        default="pointwise",
        description="pointwise: score each candidate; pairwise: judge every pair "
                                 "in both orders (position swap) and rank by mean preference.")
    rubric: str | None = Field(
        default=None, description="Jinja template of the judge prompt (None: "
        "the built-in rubric of the mode; see rewards.judge.rubric).")
    min_score: float = Field(
        default=1.0, description="pointwise: lowest score the rubric asks for.")
    max_score: float = Field(
        default=10.0, description="pointwise: highest score the rubric asks for.")
    max_new_tokens: int = Field(default=32, ge=1, description="Longest judge answer (greedy).")
    batch_size: int = Field(default=16, ge=1, description="Judge prompts per call.")
    timeout_s: float = Field(
        default=300.0, gt=0, description="Deadline of one judge call; past it the "
        "batch's items are counted reward errors.")
    cache_size: int = Field(
        default=10_000, ge=0, description="Judge answers cached by prompt hash.")
    system_prompt: str | None = Field(default=None, description="System message for the judge.")
    chat_template: bool = Field(
        default=True, description="Send the rubric as a chat message (instruct "
        "judges); false: raw text, for few-shot completion rubrics.")

    @model_validator(mode="after")
    def _scale(self) -> JudgeConfig:
        if not self.min_score < self.max_score:
            raise ValueError("min_score must be < max_score")
        return self


class GenerateConfig(Strict):
    output: str = Field(..., description="Dataset file written (relative to the run dir).")
    k: int = Field(default=4, ge=1, description="Samples per prompt.")
    temperature: float = Field(default=0.8, gt=0, description="Sampling temperature.")
    max_new_tokens: int = Field(default=64, ge=1, description="Max response tokens.")
    num_prompts: int | None = Field(default=None, ge=1, description="Limit prompts.")
    min_margin: float = Field(default=0.0, ge=0, description="preference_pairs: min reward margin.")
    threshold: float = Field(default=1.0, description="rejection_sampling: min reward to keep.")
    decontaminate: bool = Field(
        default=True, description="Drop prompts/outputs sharing a word n-gram "
        "with the eval prompts (rlsys.data.decontam).")
    decontam_n: int = Field(default=8, ge=1, description="n of the decontamination word n-grams.")
    fewshot: int = Field(default=3, ge=1, description="self_instruct: seed instructions shown per "
                                              "meta-prompt.")
    min_words: int = Field(
        default=3, ge=1, description="self_instruct: min words of a new instruction.")
    max_words: int = Field(default=150, ge=1, description="self_instruct: max words of a new "
                                                  "instruction.")
    max_similarity: float = Field(
        default=0.7, gt=0, le=1, description="self_instruct: max word-bigram "
        "Jaccard similarity to a seed or an earlier instruction.")
    max_template_share: float = Field(
        default=0.25, gt=0, le=1, description="self_instruct: max share of "
        "kept instructions with the same first three words.")
    judge: JudgeConfig | None = Field(
        default=None, description="preference_pairs: rank the candidates "
        "with an LLM judge instead of the recipe's reward.")

    @model_validator(mode="after")
    def _word_range(self) -> GenerateConfig:
        if self.min_words > self.max_words:
            raise ValueError("min_words must be <= max_words")
        return self


class RewardModelConfig(Strict):
    margin: float = Field(default=0.0, ge=0, description="Bradley-Terry margin m: loss is "
                                                 "-log sigmoid(r_chosen - r_rejected - m).")
    eval_sources: list[str] = Field(default_factory=list, description="Held-out pair sources "
                                    "for pair accuracy (default: every split=eval pair source).")
    max_eval_pairs: int | None = Field(
        default=None, ge=1, description="Limit held-out pairs per source.")


class MergeModelConfig(Strict):
    path: str = Field(..., description="'input' (the previous stage's model), 'base' (model.path)"
                                       ", 'stage:NAME' (an earlier stage's final model), or an HF "
                                       "directory / short model name.")
    weight: float = Field(
        default=1.0, description="Weight (linear, task_arithmetic, ties; unused by "
        "slerp).")


class MergeConfig(Strict):
    method: Literal[MERGE_METHODS] = Field(..., description="How to merge: linear, "  # type: ignore[valid-type]
                                           "task_arithmetic, ties or slerp.")
    models: list[MergeModelConfig] = Field(..., min_length=1, description="Models to merge "
                                           "(same architecture); slerp: exactly 2, t=0 is the "
                                           "first.")
    base: str | None = Field(
        default=None, description="Common ancestor for task_arithmetic / ties (same "
        "forms as models[].path).")
    t: float = Field(default=0.5, ge=0, le=1, description="slerp interpolation factor.")
    density: float = Field(
        default=1.0, gt=0, le=1, description="ties: fraction of each task vector kept.")
    scale: float = Field(
        default=1.0, description="task_arithmetic / ties: scale of the merged task "
        "vector.")

    @model_validator(mode="after")
    def _method_args(self) -> MergeConfig:
        if self.method == "slerp" and len(self.models) != 2:
            raise ValueError(f"models: slerp merges exactly 2 models, got {len(self.models)}")
        needs_base = self.method in ("task_arithmetic", "ties")
        if needs_base != (self.base is not None):
            raise ValueError(f"base: {self.method} " + ("needs" if needs_base else "takes no")
                             + " base model")
        return self


class CurriculumPhase(Strict):
    until_step: int | None = Field(
        default=None, ge=1, description="The phase ends after this optimizer "
        "step of the stage (1-based, counted from the stage start).")
    until_tokens: int | None = Field(
        default=None, ge=1, description="The phase ends after the first "
        "step at which the stage has trained on this many tokens "
        "(real tokens, padding excluded).")
    weights: dict[str, float] = Field(..., min_length=1, description="Mixture weights by source "
                                      "name in this phase; sources of the stage left out get 0.")

    @model_validator(mode="after")
    def _one_bound(self) -> CurriculumPhase:
        if self.until_step is not None and self.until_tokens is not None:
            raise ValueError("a phase ends by until_step or by until_tokens, not both")
        if any(not w >= 0 for w in self.weights.values()) or sum(self.weights.values()) <= 0:
            raise ValueError(f"weights must be >= 0 and not all 0, got {self.weights}")
        return self


def _check_curriculum(phases: list[CurriculumPhase], steps: int) -> None:
    """Every phase but the last has one bound, bounds grow, step bounds fall inside the stage."""
    *body, last = phases
    if last.until_step is not None or last.until_tokens is not None:
        raise ValueError("curriculum: the last phase runs to the end of the stage (no until_*)")
    for k, phase in enumerate(body):
        if phase.until_step is None and phase.until_tokens is None:
            raise ValueError(f"curriculum.{k}: needs until_step or until_tokens")
        if phase.until_step is not None and phase.until_step >= steps:
            raise ValueError(f"curriculum.{k}.until_step: {phase.until_step} must be < the "
                             f"stage's steps ({steps})")
    if body and len({p.until_step is None for p in body}) > 1:
        raise ValueError("curriculum: phases end all by until_step or all by until_tokens")
    for key in ("until_step", "until_tokens"):
        bounds = [getattr(p, key) for p in body if getattr(p, key) is not None]
        if bounds != sorted(set(bounds)):
            raise ValueError(f"curriculum: {key} must increase from phase to phase, got {bounds}")
