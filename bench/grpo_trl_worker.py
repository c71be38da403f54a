"""TRL side of ``bench/bench_grpo.py``: ``GRPOTrainer`` on a spec file, timings as JSON on stdout.

Runs inside ``bench/.venv-trl`` (TRL 1.16, CPU torch), never in the project venv:

    bench/.venv-trl/bin/python bench/grpo_trl_worker.py SPEC.json

The spec names the model directory, the chat-formatted prompts in step order, their answers and
the GRPO settings. The reward is the project's own answer check (``rewards.math.reward
.grade_batch``: last ``\\boxed{}`` vs the reference, sympy-equivalent), imported from the
repository root, which needs only sympy (a torch dependency, so present here). Prints one line
``RESULTS {json}`` with per-optimizer-step wall times and a coarse breakdown. It does not
compare anything or write files outside a temporary output dir.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _timed(name: str, seconds: dict[str, float]):
    """A method wrapper adding the wall time of each call to ``seconds[name]``."""

    def wrap(method):
        def inner(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t0

        return inner

    return wrap


def make_trainer_class(seconds: dict[str, float]):
    """``GRPOTrainer`` with timing around generation, reward, and the whole training step."""
    from trl import GRPOTrainer

    class TimedGRPOTrainer(GRPOTrainer):
        """Only adds timing; the computation is GRPOTrainer's."""

        @_timed("generate", seconds)
        def _generate(self, *args, **kwargs):
            return super()._generate(*args, **kwargs)

        @_timed("reward", seconds)
        def _calculate_rewards(self, *args, **kwargs):
            return super()._calculate_rewards(*args, **kwargs)

        @_timed("generate_and_score", seconds)
        def _generate_and_score_completions(self, *args, **kwargs):
            return super()._generate_and_score_completions(*args, **kwargs)

        @_timed("training_step", seconds)
        def training_step(self, *args, **kwargs):
            return super().training_step(*args, **kwargs)

    return TimedGRPOTrainer


def make_callback(steps: list[dict], seconds: dict[str, float]):
    """A ``TrainerCallback`` recording each optimizer step's wall time and phase seconds."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """``begin_to_end``: on_step_begin -> on_step_end; ``end_to_end``: since the previous
        step ended (or training began), so it also holds the data fetch and TRL's logging."""

        def on_train_begin(self, args, state, control, **kwargs):
            self.last_end = time.perf_counter()

        def on_step_begin(self, args, state, control, **kwargs):
            seconds.clear()
            self.begin = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            now = time.perf_counter()
            steps.append({"step": state.global_step, "begin_to_end": now - self.begin,
                          "end_to_end": now - self.last_end, **dict(seconds)})
            self.last_end = now

    return StepTimer()


def math_reward(completions, answer, **_):
    """1.0 when the completion's final answer equals ``answer`` (the rlsys math check)."""
    from rewards.math.reward import grade_batch

    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [float(g.correct) for g in grade_batch(texts, [str(a) for a in answer])]


def run(spec: dict) -> dict:
    """Train ``spec["steps"]`` GRPO steps; returns the timings and a few metrics."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"])
    model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], dtype=torch.float32)
    rows = [{"prompt": [{"role": "system", "content": spec["system_prompt"]},
                        {"role": "user", "content": r["prompt"]}], "answer": r["answer"]}
            for r in spec["records"]]
    config = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="trl-grpo-"), use_cpu=True, report_to=[],
        max_steps=spec["steps"], learning_rate=spec["lr"], lr_scheduler_type="constant",
        warmup_steps=0, weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.95, max_grad_norm=1.0,
        # TRL 1.16: per_device_train_batch_size counts completions; one generation batch of
        # prompts x group per optimizer step (steps_per_generation = grad accumulation = 1).
        per_device_train_batch_size=spec["prompts"] * spec["group"],
        gradient_accumulation_steps=1, num_generations=spec["group"],
        max_completion_length=spec["max_new_tokens"], temperature=spec["temperature"],
        top_p=1.0, top_k=0, beta=0.0, epsilon=spec["clip_low"], epsilon_high=spec["clip_high"],
        loss_type="dapo", num_iterations=1, shuffle_dataset=False, seed=0,
        logging_steps=1, save_strategy="no", eval_strategy="no", disable_tqdm=True,
        dataloader_num_workers=0,
        # GRPOConfig defaults to bf16 autocast and gradient checkpointing; rlsys here trains in
        # fp32 without checkpointing (and these CPUs have no bf16 hardware), so match that.
        bf16=False, fp16=False, gradient_checkpointing=False,
    )
    steps: list[dict] = []
    seconds: dict[str, float] = {}
    trainer = make_trainer_class(seconds)(
        model=model, reward_funcs=math_reward, args=config,
        train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
        callbacks=[make_callback(steps, seconds)])
    t0 = time.perf_counter()
    trainer.train()
    logs = [h for h in trainer.state.log_history if "reward" in h]
    return {"steps": steps, "train_s": time.perf_counter() - t0,
            "reward_mean": [h["reward"] for h in logs],
            "completion_length": [h.get("completions/mean_length") for h in logs],
            "threads": torch.get_num_threads(),
            "settings": {"bf16": config.bf16, "gradient_checkpointing":
                         config.gradient_checkpointing, "loss_type": config.loss_type}}


def main() -> None:
    """Read the spec path from argv, run, print ``RESULTS {json}``."""
    if len(sys.argv) != 2:
        raise SystemExit("usage: grpo_trl_worker.py SPEC.json")
    sys.path.insert(0, ROOT)  # for rewards.math (pure Python + sympy)
    t0 = time.perf_counter()
    with open(sys.argv[1]) as handle:
        spec = json.load(handle)
    result = run(spec)
    result["process_s"] = time.perf_counter() - t0
    print("RESULTS " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
