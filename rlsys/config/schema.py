"""The typed recipe: pydantic v2 models, frozen, ``extra="forbid"``, a description on every field.

A recipe is shared sections (``model``, ``data``, ``rollout``, ``reward``, ``learner``,
``cluster``, ``checkpoint``, ``logging``) plus an ordered list of ``stages``. Cross-field rules
live in validators here; registry names (estimators, objectives, rewards, ...) are checked by
``rlsys.config.load`` after parsing, so this module imports no torch.
This module only describes configuration; it never runs anything.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rlsys.config.env import EnvConfig

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


class LoraConfig(Strict):
    """LoRA adapters (the ``peft`` library) instead of full fine-tuning; see README "LoRA"."""

    enabled: bool = Field(
        default=True, description="False trains the whole model (a stage override "
        "that turns the recipe's LoRA off).")
    r: int = Field(default=16, ge=1, description="Adapter rank.")
    alpha: float = Field(
        default=32.0, gt=0, description="Scale numerator: updates are alpha/r * B@A.")
    dropout: float = Field(default=0.0, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        min_length=1, description="Module names (suffixes) that get adapters; 'all-linear' "
                                  "for every linear layer but the LM head.")
    modules_to_save: list[str] = Field(default_factory=list, description="Modules trained "
                                       "in full beside the adapters (e.g. embed_tokens).")


class ModelConfig(Strict):
    path: str = Field(
        default="tiny-llama",
        description="HF directory or a short name (smollm2-135m-instruct, tiny-llama[:seed]).",
    )
    dtype: Literal["float32", "bfloat16"] = Field(default="float32", description="Model dtype.")
    system_prompt: str | None = Field(
        default=None, description="System message prepended to prompts.")
    lora: LoraConfig | None = Field(default=None, description="LoRA for every trained stage (None: "
                                                      "full fine-tuning); stages may override.")


class SourceConfig(Strict):
    name: str = Field(..., description="Unique name of this data source.")
    path: str | None = Field(
        default=None, description="JSONL/JSON/Parquet file or saved HF dataset dir.")
    generator: str | None = Field(
        default=None, description="Built-in generator instead of a file (e.g. 'arithmetic')."
    )
    generator_kwargs: dict[str, Any] = Field(default_factory=dict,
                                             description="Arguments for the generator.")
    format: Literal[SOURCE_FORMATS] | None = Field(  # type: ignore[valid-type]
        default=None,
        description="File format; inferred from the name when omitted (a directory is "
                          "hf_disk, a saved HF dataset). hf_json / hf_parquet read the file "
                          "through datasets.load_dataset.")
    kind: Literal["text", "sft", "pair", "prompt"] = Field(
        default="sft",
        description="text: CPT; sft: prompt/response or messages; pair: chosen/rejected; "
                           "prompt: RL/eval prompts with an answer.")
    fields: dict[str, str] = Field(default_factory=dict,
                                   description="Canonical name -> column name mapping; every "
                                               "mapped column is required in every row.")
    weight: float = Field(default=1.0, gt=0, description="Mixture weight (relative).")
    split: Literal["train", "eval"] = Field(default="train", description="train or held-out eval.")
    on_error: Literal["raise", "skip"] = Field(
        default="raise", description="Malformed rows: fail or skip "
        "and count.")

    @model_validator(mode="after")
    def _one_origin(self) -> SourceConfig:
        if (self.path is None) == (self.generator is None):
            raise ValueError("give exactly one of 'path' or 'generator'")
        unknown = sorted(set(self.fields) - set(CANONICAL_FIELDS))
        if unknown:
            raise ValueError(f"fields: unknown canonical name(s) {unknown}; known: "
                             f"{list(CANONICAL_FIELDS)}")
        return self


class DataConfig(Strict):
    sources: list[SourceConfig] = Field(default_factory=list, description="All data sources.")
    max_len: int = Field(
        default=512, gt=8, description="Max tokens per encoded example (truncates).")
    mask_mode: Literal["none", "prompt", "template", "assistant"] = Field(
        default="prompt", description="SFT label masking mode (see the seed tutorial).")
    packing: bool = Field(
        default=True, description="Pack examples into rows of max_tokens_per_row.")
    max_tokens_per_row: int = Field(default=1024, gt=8, description="Row length when packing.")

    @model_validator(mode="after")
    def _unique(self) -> DataConfig:
        names = [s.name for s in self.sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate source names: {dupes}")
        if self.packing and self.max_tokens_per_row < self.max_len:
            raise ValueError("max_tokens_per_row must be >= max_len when packing")
        return self


class RolloutConfig(Strict):
    engine: Literal["hf", "vllm"] = Field(default="hf", description="Rollout engine.")
    num_workers: int = Field(default=1, ge=1, description="Rollout worker actors.")
    num_cpus_per_worker: float = Field(
        default=1.0, gt=0, description="Ray CPUs per rollout worker.")
    num_gpus_per_worker: float = Field(
        default=0.0, ge=0, description="Ray GPUs per rollout worker.")
    n: int = Field(default=4, ge=1, description="Responses sampled per prompt (the group size).")
    prompts_per_step: int = Field(default=8, ge=1, description="Prompts per RL step (the RL batch: "
                                  "n responses each); stages[].batch_size is for "
                                  f"{'/'.join(BATCH_KINDS)} stages.")
    temperature: float = Field(default=0.8, ge=0, description="Sampling temperature.")
    top_p: float = Field(default=1.0, gt=0, le=1, description="Nucleus sampling threshold.")
    max_new_tokens: int = Field(default=64, ge=1, description="Max response tokens.")
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="Extra engine args.")


class RewardConfig(Strict):
    type: str = Field(
        default="math", description="Reward registry name (math, code, format, model, "
        "remote, weighted, or a plugin).")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Reward constructor args.")
    url: str | None = Field(default=None, description="Service URL for type=remote.")
    num_workers: int = Field(default=1, ge=1, description="Reward worker actors.")

    @model_validator(mode="after")
    def _remote_needs_url(self) -> RewardConfig:
        if self.type == "remote" and not (self.url or self.kwargs.get("url")):
            raise ValueError("reward type 'remote' needs 'url'")
        if self.type == "judge":
            raise ValueError("reward type 'judge' needs a judge worker pool: set "
                             "stages[].generate.judge on a preference_pairs stage")
        return self


class ScheduleConfig(Strict):
    name: Literal["constant", "cosine", "rewarm", "wsd"] = Field(
        default="cosine", description="LR schedule (learner.schedules.SCHEDULES).")
    warmup_steps: int = Field(default=0, ge=0, description="Linear warmup steps.")
    min_lr_ratio: float = Field(
        default=0.1, ge=0, le=1, description="Floor as a fraction of peak LR.")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Schedule-specific args: "
                                   "rewarm start_lr_ratio (default min_lr_ratio), wsd "
                                   "decay_steps (default 10% of the stage) and decay.")

    @model_validator(mode="after")
    def _schedule_args(self) -> ScheduleConfig:
        if self.name == "rewarm" and self.warmup_steps < 1:
            raise ValueError("the rewarm schedule needs warmup_steps >= 1")
        allowed = {"constant": set(), "cosine": {"start_lr_ratio"},
                   "rewarm": {"start_lr_ratio"}, "wsd": {"decay_steps", "decay"}}[self.name]
        unknown = sorted(set(self.kwargs) - allowed)
        if unknown:
            raise ValueError(f"schedule {self.name!r} takes no {unknown}; allowed kwargs: "
                             f"{sorted(allowed) or 'none'}")
        return self


class LearnerConfig(Strict):
    num_ranks: int = Field(default=1, ge=1, description="Learner ranks (one Ray actor each).")
    num_cpus_per_rank: float = Field(default=1.0, gt=0, description="Ray CPUs per rank.")
    num_gpus_per_rank: float = Field(default=0.0, ge=0, description="Ray GPUs per rank.")
    zero_stage: int = Field(default=0, ge=0, le=3, description="DeepSpeed ZeRO stage.")
    lr: float = Field(default=1e-5, gt=0, description="Peak learning rate.")
    weight_decay: float = Field(default=0.0, ge=0, description="AdamW decoupled weight decay.")
    betas: tuple[float, float] = Field(default=(0.9, 0.95), description="AdamW betas.")
    eps: float = Field(default=1e-8, gt=0, description="AdamW epsilon.")
    grad_clip: float = Field(default=1.0, gt=0, description="Max global gradient norm.")
    micro_batch_size: int = Field(default=8, ge=1, description="Rows per forward/backward.")
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig, description="LR schedule.")
    gradient_checkpointing: bool = Field(default=False, description="Recompute activations.")

    @model_validator(mode="after")
    def _betas(self) -> LearnerConfig:
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError("betas must be in [0, 1)")
        return self


class ClusterConfig(Strict):
    address: str | None = Field(
        default=None, description="Ray address; RAY_ADDRESS env wins if set.")
    num_cpus: int | None = Field(
        default=None, ge=1, description="CPUs for a local Ray (default: all).")
    timeout_s: float = Field(default=900.0, gt=0, description="Timeout of any one remote call.")


class CheckpointConfig(Strict):
    every_n_steps: int = Field(
        default=0, ge=0, description="Save every N steps (0: end of stage only).")
    keep_last: int = Field(default=2, ge=1, description="Checkpoints kept per stage.")
    resume: bool = Field(
        default=True, description="Resume from the latest checkpoint in the run dir.")


class LoggingConfig(Strict):
    run_dir: str = Field(
        default="runs/{name}", description="Output dir; {name} is the recipe name.")
    trackers: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(
        default=["tensorboard"],
        description="Experiment trackers fed every step's metrics, the recipe "
        "and the final model path: tensorboard, wandb, mlflow ([]: metrics.jsonl only).")
    project: str | None = Field(
        default=None, description="W&B project / MLflow experiment (default: "
        "the recipe name).")
    mlflow_tracking_uri: str | None = Field(
        default=None, description="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else a file "
        "store in RUN_DIR/mlruns, which needs MLFLOW_ALLOW_FILE_STORE=true).")
    progress: bool = Field(default=True, description="Show a progress bar.")
    plot: bool = Field(default=True, description="Write PNG curves at the end of each stage.")

    @model_validator(mode="before")
    @classmethod
    def _legacy_tensorboard(cls, data: Any) -> Any:
        # ``tensorboard: true/false`` (older recipes, --set) adds/removes it from ``trackers``
        if isinstance(data, dict) and "tensorboard" in data:
            data = dict(data)
            flag = data.pop("tensorboard")
            if not isinstance(flag, bool):
                raise ValueError("tensorboard: must be true or false (or use trackers)")
            trackers = data.get("trackers", ["tensorboard"])
            if isinstance(trackers, list):
                rest = [t for t in trackers if t != "tensorboard"]
                data["trackers"] = ["tensorboard", *rest] if flag else rest
        return data

    @model_validator(mode="after")
    def _distinct_trackers(self) -> LoggingConfig:
        if len(set(self.trackers)) != len(self.trackers):
            raise ValueError(f"trackers: {self.trackers} names a tracker twice")
        return self

    @property
    def tensorboard(self) -> bool:
        """Whether TensorBoard events are written (``"tensorboard" in trackers``)."""
        return "tensorboard" in self.trackers


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
        default=False, description="Overlap generation of step t+1 with training.")
    max_staleness: int = Field(default=1, description="Policy versions an async batch lags; only 1 "
                                              "(bounded staleness > 1 is not implemented).")

    @model_validator(mode="after")
    def _rules(self) -> AlgoConfig:
        if self.max_staleness != 1:
            raise ValueError(f"max_staleness: only 1 is supported (async_rollout generates step "
                             f"t+1 with the weights of step t); bounded staleness > 1 is not "
                             f"implemented yet, got {self.max_staleness}")
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


class StageConfig(Strict):
    name: str = Field(..., description="Unique stage name (used in the run dir).")
    kind: Literal[STAGE_KINDS] = Field(..., description="What the stage does.")  # type: ignore[valid-type]
    steps: int = Field(
        default=1, ge=1, description="Optimizer steps (RL: rollout-update iterations).")
    batch_size: int = Field(default=8, ge=1, description=f"Examples per optimizer step "
                            f"({', '.join(BATCH_KINDS)} only). RL stages take "
                            f"rollout.prompts_per_step prompts (x rollout.n responses) per step.")
    sources: list[str] = Field(default_factory=list,
                               description="Training sources by name (default: all that fit).")
    curriculum: list[CurriculumPhase] | None = Field(
        default=None,
        min_length=1, description="cpt/sft only: phases of mixture weights within the "
        "stage (one LR schedule), each ending at a step or a token count; replaces the "
        "sources' own weights.")
    lr: float | None = Field(default=None, gt=0, description="Override learner.lr for this stage.")
    eval_before: bool = Field(default=False, description="Run the eval before the stage.")
    eval_after: bool = Field(default=False, description="Run the eval after the stage.")
    algo: AlgoConfig | None = Field(default=None, description="RL options (RL kinds only).")
    dpo: DPOConfig | None = Field(default=None, description="DPO options (dpo only).")
    generate: GenerateConfig | None = Field(default=None, description="Synthetic-data options.")
    rm: RewardModelConfig | None = Field(
        default=None, description="Reward-model options (rm only).")
    merge: MergeConfig | None = Field(
        default=None, description="Merge options (merge only, required).")
    lora: LoraConfig | None = Field(default=None, description="Override model.lora for this stage "
                                                      "({enabled: false}: train the whole model).")

    @model_validator(mode="before")
    @classmethod
    def _removed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "eval_every" in data:
            raise ValueError("eval_every: not supported (periodic eval inside a stage is not "
                             "implemented); use eval_before / eval_after, or split the stage")
        return data

    @model_validator(mode="after")
    def _sections(self) -> StageConfig:
        if "batch_size" in self.model_fields_set and self.kind not in BATCH_KINDS:
            hint = ("set rollout.prompts_per_step (prompts per RL step)" if self.kind in RL_KINDS
                    else "it is not used by this kind")
            raise ValueError(f"batch_size: only for {BATCH_KINDS} stages, not {self.kind!r}; "
                             f"{hint}")
        if self.algo is not None and self.kind not in RL_KINDS:
            raise ValueError(f"'algo' is only for RL stages {RL_KINDS}, not {self.kind!r}")
        if self.curriculum is not None:
            if self.kind not in SFT_KINDS:
                raise ValueError(f"curriculum: only for {SFT_KINDS} stages, not {self.kind!r}")
            _check_curriculum(self.curriculum, self.steps)
        if self.dpo is not None and self.kind != "dpo":
            raise ValueError("'dpo' options are only for kind 'dpo'")
        if self.rm is not None and self.kind != "rm":
            raise ValueError("'rm' options are only for kind 'rm'")
        if (self.merge is not None) != (self.kind == "merge"):
            raise ValueError("kind 'merge' needs a 'merge' section; other kinds take none")
        if self.kind in DATA_GEN_KINDS and self.generate is None:
            raise ValueError(f"kind {self.kind!r} needs a 'generate' section")
        if self.generate is not None and self.generate.judge and self.kind != "preference_pairs":
            raise ValueError("'generate.judge' is only for kind 'preference_pairs'")
        return self

    @property
    def algo_or_default(self) -> AlgoConfig:
        """The RL options, defaults filled in."""
        return self.algo or AlgoConfig()

    def lora_for(self, model: ModelConfig) -> LoraConfig | None:
        """The LoRA this stage trains with: its own override, else ``model.lora``; None when
        neither is set or the one that applies says ``enabled: false``."""
        lora = self.lora if self.lora is not None else model.lora
        return lora if lora is not None and lora.enabled else None

    @property
    def estimator(self) -> str:
        """The advantage estimator: ``algo.estimator`` or the kind's default."""
        return self.algo_or_default.estimator or DEFAULT_ESTIMATOR[self.kind]


def _check_rm_merge(i: int, stage: StageConfig, sources: set[str], earlier: list[str]) -> None:
    """rm: held-out sources exist; merge: ``stage:NAME`` references name an earlier stage."""
    missing = [s for s in (stage.rm.eval_sources if stage.rm else []) if s not in sources]
    if missing:
        raise ValueError(f"stages.{i}.rm.eval_sources: unknown source(s) {missing}")
    if stage.merge is None:
        return
    refs = [(f"models.{k}.path", m.path) for k, m in enumerate(stage.merge.models)]
    refs += [("base", stage.merge.base)] if stage.merge.base else []
    for field, ref in refs:
        if ref.startswith("stage:") and ref.removeprefix("stage:") not in earlier:
            raise ValueError(f"stages.{i}.merge.{field}: {ref!r} must name an earlier stage; "
                             f"earlier: {earlier}")


class Recipe(Strict):
    name: str = Field(..., description="Recipe name (run dir default uses it).")
    seed: int = Field(default=0, description="Global seed.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="The policy model.")
    data: DataConfig = Field(default_factory=DataConfig, description="Data sources and encoding.")
    rollout: RolloutConfig = Field(default_factory=RolloutConfig, description="Rollout workers.")
    reward: RewardConfig = Field(default_factory=RewardConfig, description="Reward.")
    learner: LearnerConfig = Field(default_factory=LearnerConfig, description="Learner group.")
    cluster: ClusterConfig = Field(default_factory=ClusterConfig, description="Ray cluster.")
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig,
                                         description="Checkpointing.")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="Outputs.")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Held-out evaluation.")
    env: EnvConfig | None = Field(default=None, description="Environment for multi-turn (agentic) "
                                  "stages; not yet used by stages: multi-turn rollout is in "
                                  "progress, so a recipe that sets it is refused.")
    stages: list[StageConfig] = Field(..., min_length=1, description="Stages, run in order.")

    @model_validator(mode="after")
    def _cross(self) -> Recipe:
        names = [s.name for s in self.stages]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate stage names: {dupes}")
        known = {s.name for s in self.data.sources}
        for i, stage in enumerate(self.stages):
            missing = [s for s in stage.sources if s not in known]
            if missing:
                raise ValueError(f"stages.{i}.sources: unknown source(s) {missing}; "
                                 f"known: {sorted(known)}")
            for k, phase in enumerate(stage.curriculum or []):
                allowed = set(stage.sources) or known
                unknown = sorted(set(phase.weights) - allowed)
                if unknown:
                    raise ValueError(f"stages.{i}.curriculum.{k}.weights: unknown source(s) "
                                     f"{unknown}; known: {sorted(allowed)}")
            if stage.kind == "ppo" and stage.estimator != "gae":
                raise ValueError(f"stages.{i}: ppo needs the 'gae' estimator (critic)")
            _check_rm_merge(i, stage, known, names[:i])
        missing = [s for s in self.eval.sources if s not in known]
        if missing:
            raise ValueError(f"eval.sources: unknown source(s) {missing}")
        if self.rollout.n < 2 and any(s.estimator in ("grpo", "dr_grpo", "rloo")
                                      for s in self.stages if s.kind in RL_KINDS):
            raise ValueError("rollout.n must be >= 2 for group-baseline estimators")
        return self
