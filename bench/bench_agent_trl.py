"""Multi-turn GRPO step time, calculator tool: rlsys (``env: tool_math``) vs TRL's GRPOTrainer.

Same model directory (``smollm2-135m-instruct``, fp32), same problems (``tool_math``, train
split, in the order rlsys's sampler draws them), same tool (rlsys's sympy ``calculator``: TRL
calls it through a typed Python function), same reward (the final ``\\boxed{}`` checked by
``rewards.math``), same group size, temperature 1.0, lr 1e-5 constant, clip 0.2/0.28,
token-mean loss, no KL, one optimizer step per generation batch, the same torch threads.
Token budget: each generation call gets ``--tokens-per-turn`` new tokens on both sides: rlsys
``max_tokens_per_turn`` (up to ``max_turns`` turns), TRL ``max_completion_length`` with
``max_tool_calling_iterations = turns - 1`` (TRL's budget is the whole completion, tool
results included, so after a tool call TRL has less left than rlsys; without tool calls the
two runs are the same single generation).

What differs, because TRL requires it: TRL 1.16 refuses SmolLM2-135M-Instruct's own chat
template for tools (``supports_tool_calling`` is False: the template drops ``tool_calls``, and
``add_response_schema`` knows no parser for it), so the TRL side puts TRL's bundled Qwen2.5
template (same ``<|im_start|>``/``<|im_end|>`` tokens, which SmolLM2's vocabulary has) on the
tokenizer; TRL renders the tool schema into the system prompt itself, rlsys's environment
describes its tools in its own system message. The check is run and reported every time.

TRL runs in ``bench/.venv-trl`` as a subprocess of this file (``--trl-worker SPEC``); rlsys
runs in this process through ``run_recipe`` (Ray), never at the same time.

    .venv/bin/python bench/bench_agent_trl.py [--prompts 4] [--group 4] [--steps 3]
        [--turns 3] [--tokens-per-turn 32] [--threads 1] [--skip-trl]

Writes ``bench/agent_trl_results.md``. Not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TRL_PYTHON = os.path.join(HERE, ".venv-trl", "bin", "python")
SOURCE, SEED, LR = "problems", 0, 1e-5
SYSTEM = "When you know the result, answer without a tool call. Put the final answer in \\boxed{}."


def build_recipe(args):
    """The rlsys multi-turn GRPO recipe of the benchmark (HF engine, 1 worker, 1 rank)."""
    from rlsys.config import recipe_from_dict

    rows = args.prompts * args.group
    return recipe_from_dict({
        "name": "bench_agent_trl", "seed": SEED,
        "model": {"path": args.model, "dtype": "float32"},
        "data": {"sources": [{"name": SOURCE, "generator": "tool_math", "kind": "prompt",
                              "generator_kwargs": {"num": args.prompts * args.steps}}]},
        "env": {"type": "tool_math",
                "kwargs": {"tools": ["calculator"], "max_tool_turns": args.turns},
                "max_turns": args.turns, "max_tokens_per_turn": args.tokens_per_turn,
                "max_total_tokens": 2048},
        "rollout": {"engine": "hf", "num_workers": 1, "n": args.group,
                    "prompts_per_step": args.prompts, "temperature": 1.0,
                    "num_cpus_per_worker": args.threads,
                    "engine_kwargs": {"num_threads": args.threads, "max_batch_size": rows}},
        "learner": {"num_ranks": 1, "num_cpus_per_rank": args.threads, "zero_stage": 0,
                    "lr": LR, "weight_decay": 0.0, "betas": [0.9, 0.95], "grad_clip": 1.0,
                    "micro_batch_size": rows, "schedule": {"name": "constant"}},
        "checkpoint": {"every_n_steps": 0, "resume": False},
        "logging": {"tensorboard": False, "progress": False, "plot": False},
        "stages": [{"name": "grpo", "kind": "grpo", "steps": args.steps,
                    "algo": {"estimator": "grpo", "clip_low": 0.2, "clip_high": 0.28,
                             "aggregation": "token_mean", "kl_coef": 0.0}}],
    }, source="bench_agent_trl")


def run_rlsys(recipe, workdir: str) -> dict:
    """``run_recipe`` here; per-step metrics rows and the process wall time."""
    from rlsys.controller.runner import run_recipe

    t0 = time.perf_counter()
    run_dir = run_recipe(recipe, run_dir=os.path.join(workdir, "rlsys_run"))
    wall = time.perf_counter() - t0
    with open(run_dir / "metrics.jsonl") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    rows = [r for r in rows if r.get("stage") == "grpo" and "time/step_s" in r]
    return {"steps": [r["time/step_s"] for r in rows],
            "generate": [r.get("time/generate", 0.0) for r in rows],
            "turns": [r.get("turns/mean") for r in rows],
            "tool_calls": [r.get("tool_calls/mean") for r in rows],
            "reward": [r.get("reward/mean") for r in rows],
            "length": [r.get("response_length/mean") for r in rows], "wall_s": wall}


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression exactly.

    Args:
        expression: The expression, e.g. 4821*937 or 7/3.

    Returns:
        The value of the expression, or an error message.
    """
    from rlsys.envs.tools import CalculatorTool, ToolError

    try:
        return CalculatorTool()({"expression": expression})
    except ToolError as exc:
        return f"error: {exc}"


def final_answer_reward(completions, answer, **_):
    """1.0 when the last message's final answer equals ``answer`` (``rewards.math``)."""
    from rewards.math import extract_answer, verify

    out = []
    for completion, ref in zip(completions, answer, strict=True):
        text = completion[-1]["content"] if isinstance(completion, list) else completion
        pred = extract_answer(text or "")
        out.append(1.0 if pred is not None and verify(pred, str(ref), 5.0) else 0.0)
    return out


def trl_worker(spec_path: str) -> None:
    """Inside bench/.venv-trl: GRPOTrainer with ``tools=[calculator]``; prints RESULTS json."""
    import torch
    from datasets import Dataset
    from grpo_trl_worker import make_callback, make_trainer_class
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, __version__
    from trl.chat_template_utils import qwen2_5_chat_template, supports_tool_calling

    with open(spec_path) as handle:
        spec = json.load(handle)
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"])
    own_template_ok = supports_tool_calling(tokenizer)
    if not own_template_ok:
        tokenizer.chat_template = qwen2_5_chat_template
    model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], dtype=torch.float32)
    rows = [{"prompt": [{"role": "system", "content": SYSTEM},
                        {"role": "user", "content": r["prompt"]}], "answer": r["answer"]}
            for r in spec["records"]]
    config = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="trl-agent-"), use_cpu=True, report_to=[],
        max_steps=spec["steps"], learning_rate=LR, lr_scheduler_type="constant",
        warmup_steps=0, weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.95, max_grad_norm=1.0,
        per_device_train_batch_size=spec["prompts"] * spec["group"],
        gradient_accumulation_steps=1, num_generations=spec["group"],
        max_completion_length=spec["tokens_per_turn"],
        max_tool_calling_iterations=spec["turns"] - 1, temperature=1.0, top_p=1.0, top_k=0,
        beta=0.0, epsilon=0.2, epsilon_high=0.28, loss_type="dapo", num_iterations=1,
        shuffle_dataset=False, seed=0, logging_steps=1, save_strategy="no", eval_strategy="no",
        disable_tqdm=True, dataloader_num_workers=0, bf16=False, fp16=False,
        gradient_checkpointing=False)
    steps: list[dict] = []
    seconds: dict[str, float] = {}
    trainer = make_trainer_class(seconds)(
        model=model, reward_funcs=final_answer_reward, args=config, tools=[calculator],
        train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
        callbacks=[make_callback(steps, seconds)])
    trainer.train()
    logs = [h for h in trainer.state.log_history if "reward" in h]
    print("RESULTS " + json.dumps({
        "trl": __version__, "own_template_supports_tools": own_template_ok, "steps": steps,
        "reward": [h["reward"] for h in logs],
        "tool_calls": [h.get("tools/call_frequency") for h in logs],
        "completion_length": [h.get("completions/mean_length") for h in logs]}), flush=True)


def run_trl(spec: dict, workdir: str) -> dict:
    """``trl_worker`` in the TRL venv; its RESULTS plus the process wall time."""
    if not os.path.exists(TRL_PYTHON):
        raise SystemExit(f"TRL venv missing: {TRL_PYTHON} (bench/bench_packing.py makes it)")
    spec_path = os.path.join(workdir, "trl_spec.json")
    with open(spec_path, "w") as handle:
        json.dump(spec, handle)
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"]),
           "TOKENIZERS_PARALLELISM": "false", "TRL_EXPERIMENTAL_SILENCE": "1",
           "PYTHONPATH": os.pathsep.join([HERE, ROOT])}
    t0 = time.perf_counter()
    proc = subprocess.run([TRL_PYTHON, os.path.abspath(__file__), "--trl-worker", spec_path],
                          capture_output=True, text=True, env=env, cwd=workdir)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"TRL worker failed (rc {proc.returncode}):\n"
                           f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return {**json.loads(lines[-1][len("RESULTS "):]), "wall_s": time.perf_counter() - t0}


def _mean(values) -> float:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else float("nan")


def report(args, rlsys: dict, trl: dict | None, loads: list[str]) -> str:
    """The markdown section."""
    command = "python bench/bench_agent_trl.py " + " ".join(sys.argv[1:])
    out = ["## Multi-turn GRPO step time vs TRL (bench/bench_agent_trl.py)", "",
           f"Command: `{command.strip()}` ({time.strftime('%Y-%m-%d %H:%M')})", "",
           f"Settings: `{args.model}` fp32, {args.steps} steps x {args.prompts} prompts x group "
           f"{args.group}, up to {args.turns} turns x {args.tokens_per_turn} tokens, calculator "
           f"tool, T=1.0, {args.threads} torch thread(s) per process, {os.cpu_count()} cores.",
           "", f"Load average (1/5/15 min): {'; '.join(loads)}", "",
           "| setup | step 1 (s) | mean step 2.. (s) | all steps (s) | turns or tool calls/mean "
           "| completion tokens/mean | reward/mean | process wall (s) |",
           "|---|---|---|---|---|---|---|---|",
           f"| rlsys GRPO (env tool_math) | {rlsys['steps'][0]:.1f} | "
           f"**{_mean(rlsys['steps'][1:]):.1f}** | "
           f"{', '.join(f'{s:.1f}' for s in rlsys['steps'])} | turns {_mean(rlsys['turns']):.2f},"
           f" calls {_mean(rlsys['tool_calls']):.2f} | {_mean(rlsys['length']):.1f} | "
           f"{_mean(rlsys['reward']):.2f} | "
           f"{rlsys['wall_s']:.0f} |"]
    if trl is not None:
        steps = [s["begin_to_end"] for s in trl["steps"]]
        out.append(f"| TRL {trl['trl']} GRPOTrainer (tools=[calculator]) | {steps[0]:.1f} | "
                   f"**{_mean(steps[1:]):.1f}** | {', '.join(f'{s:.1f}' for s in steps)} | "
                   f"call frequency {_mean(trl['tool_calls']):.2f} | "
                   f"{_mean(trl['completion_length']):.1f} | {_mean(trl['reward']):.2f}"
                   f" | {trl['wall_s']:.0f} |")
        ratio = _mean(steps[1:]) / _mean(rlsys["steps"][1:])
        trl_gen = ", ".join(f"{s.get('generate_and_score', 0.0):.1f}" for s in trl["steps"])
        out += ["", f"* TRL {trl['trl']} supports multi-turn tool calling in `GRPOTrainer` "
                "(`tools=`, `environment_factory=`, `rollout_func=`, "
                "`max_tool_calling_iterations`) and runs it on CPU. SmolLM2-135M-Instruct's own "
                f"chat template passes TRL's tool check: {trl['own_template_supports_tools']}"
                + ("" if trl["own_template_supports_tools"] else
                   " (TRL raises `The provided chat template does not support tool calling`; "
                   "the TRL side ran with TRL's Qwen2.5 template on the same tokenizer and "
                   "weights)") + ".",
                f"* Mean step 2.., TRL / rlsys: **{ratio:.2f}x**. rlsys generate per step: "
                f"{', '.join(f'{s:.1f}' for s in rlsys['generate'])} s; TRL generate-and-score: "
                f"{trl_gen} s.",
                "* Tool calls made: rlsys "
                f"{_mean(rlsys['tool_calls']):.2f} per episode, TRL call frequency "
                f"{_mean(trl['tool_calls']):.2f}. With none, both steps are one generation per "
                "sample plus the multi-turn bookkeeping, so this compares the machinery's "
                "cost, not tool execution.",
                "* Sampling differs (different prompts' formatting, different random draws), so "
                "turns, tool calls and rewards are a sanity check that both ran the task, not "
                "a like-for-like comparison; one run each on a shared machine."]
    return "\n".join(out) + "\n"


def main() -> int:
    """Entry point."""
    if len(sys.argv) == 3 and sys.argv[1] == "--trl-worker":
        trl_worker(sys.argv[2])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--group", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--turns", type=int, default=3)
    ap.add_argument("--tokens-per-turn", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-trl", action="store_true")
    ap.add_argument("--out", default=os.path.join(HERE, "agent_trl_results.md"))
    args = ap.parse_args()
    sys.path.insert(0, ROOT)
    from bench_grpo import prompts_in_step_order  # bench/ is this script's directory

    from rlsys.modeling import resolve_model
    from rlsys.tasks.tool_math import generate_tool_math

    loads = [f"start: {' / '.join(f'{x:.1f}' for x in os.getloadavg())}"]
    recipe = build_recipe(args)
    with tempfile.TemporaryDirectory(prefix="bench-agent-trl-") as workdir:
        trl = None
        if not args.skip_trl:
            spec = {"model_dir": resolve_model(args.model), "threads": args.threads,
                    "records": prompts_in_step_order(
                        recipe, args.prompts * args.steps, generate_tool_math),
                    **{k: getattr(args, k) for k in ("prompts", "group", "steps", "turns",
                                                     "tokens_per_turn")}}
            trl = run_trl(spec, workdir)
            loads.append(f"after TRL: {' / '.join(f'{x:.1f}' for x in os.getloadavg())}")
        rlsys = run_rlsys(recipe, workdir)
        loads.append(f"after rlsys: {' / '.join(f'{x:.1f}' for x in os.getloadavg())}")
    text = report(args, rlsys, trl, loads)
    with open(args.out, "w") as handle:
        handle.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
