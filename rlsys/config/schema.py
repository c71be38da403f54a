"""The typed recipe: pydantic v2 models, frozen, ``extra="forbid"``, a description on every field.

A recipe is shared sections (``model``, ``data``, ``rollout``, ``reward``, ``learner``,
``cluster``, ``checkpoint``, ``logging``) plus an ordered list of ``stages``. Cross-field rules
live in validators here; registry names (estimators, objectives, rewards, ...) are checked by
``rlsys.config.load`` after parsing, so this module imports no torch.
The shared names and ``Strict`` live in ``rlsys.config.base``, the per-stage option sections
in ``rlsys.config.options``; this module composes them into ``Recipe``. It only describes
configuration; it never runs anything.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from rlsys.config.base import (
    BATCH_KINDS,
    CANONICAL_FIELDS,
    DATA_GEN_KINDS,
    DEFAULT_ESTIMATOR,
    RL_KINDS,
    SFT_KINDS,
    SOURCE_FORMATS,
    STAGE_KINDS,
    Strict,
)
from rlsys.config.cluster import PlacementRole, RolePlacement
from rlsys.config.env import EnvConfig
from rlsys.config.options import (
    AlgoConfig,
    CurriculumPhase,
    DPOConfig,
    EvalConfig,
    GenerateConfig,
    MergeConfig,
    RewardModelConfig,
    _check_curriculum,
)


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
    lora_sync: Literal["auto", "native", "merge"] = Field(
        default="auto", description="How LoRA adapter syncs reach a vllm engine: native = "
        "vLLM's LoRA adapters (enable_lora, a LoRARequest per request); merge = merged on the "
        "rollout worker, loaded as full weights; auto = native when vLLM accepts enable_lora "
        "and no modules_to_save are trained (README: LoRA). The hf engine always applies "
        "adapters in place.")
    n: int = Field(default=4, ge=1, description="Responses sampled per prompt (the group size).")
    prompts_per_step: int = Field(default=8, ge=1, description="Prompts per RL step (the RL batch: "
                                  "n responses each); stages[].batch_size is for "
                                  f"{'/'.join(BATCH_KINDS)} stages.")
    temperature: float = Field(default=0.8, ge=0, description="Sampling temperature.")
    top_p: float = Field(default=1.0, gt=0, le=1, description="Nucleus sampling threshold.")
    max_new_tokens: int = Field(default=64, ge=1, description="Max response tokens.")
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="Extra engine args.")
    weight_sync: Literal["auto", "collective", "ipc", "object_store"] = Field(
        default="auto", description="How learner weights reach the workers: collective = "
        "learner rank 0 broadcasts buckets (gloo on CPU, NCCL on GPU), never via the driver; "
        "object_store = through the driver and Ray's object store; ipc = CUDA IPC (colocated "
        "GPU only); auto = ipc when every rollout worker shares learner rank 0's GPU, else "
        "collective (README: Weight sync).")
    weight_sync_bucket_mb: float = Field(
        default=256.0, gt=0, description="Bucket size of a collective weight sync (MB): the "
        "sender's extra memory.")


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
    placement: dict[PlacementRole, RolePlacement] = Field(
        default={}, description="Where each role's actors run: rollout, reward, learner "
        "(policy/critic/reference default to it) -> {resources, labels, prefer_labels} "
        "(README: Multi-node placement).")
    max_restarts: int = Field(
        default=0, ge=0, description="Times a stage whose learner rank died (node lost, "
        "kill -9) is restarted from its last checkpoint before the run ends (exit 3).")


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
                                  "RL and eval: every RL stage samples episodes in it and is "
                                  "rewarded by it; eval runs episodes (None: single-turn).")
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
