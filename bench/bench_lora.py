"""LoRA benchmarks on CPU: bytes and seconds per weight sync (adapter vs full) and learner peak
memory (LoRA vs full fine-tuning, with and without a KL reference).

Sync (in one process, no Ray: ``bench/bench_weight_sync.py`` measures the object store): a
peft-wrapped model (r=16 on q/k/v/o/gate/up/down, ``lora_B`` randomised so the adapter is not
zero) is synced into a ``RolloutWorker`` with the HF engine, as

* ``full``    -- the merged weights (``learner.lora.merged_state``), what a full sync sends;
* ``adapter`` -- the adapter only, applied in place by the HF engine (``load_adapter``);
* ``adapter+merge`` -- the adapter only, merged on the worker (the vLLM engine's path).

``s`` is pack + ``update_weights``; the median of ``--reps`` syncs after one warm-up (the first
adapter sync also wraps the engine's model with peft layers: ``first s``).

Memory: each configuration runs in a fresh subprocess (one learner rank, SmolLM2-135M, fp32,
one SFT step on 4 x 128 tokens; ``+ref`` also computes reference log-probs) and reports its
peak RSS (``ru_maxrss``). A full fine-tuning KL reference is a second learner process (its
peak RSS is added); the LoRA reference is the same process with adapters disabled.

Run: ``.venv/bin/python bench/bench_lora.py [--reps 3]``; writes ``bench/lora_results.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch

LORA = {"r": 16, "alpha": 32.0, "dropout": 0.0, "modules_to_save": [],
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                           "down_proj"]}


def _models() -> list[tuple[str, str]]:
    from rlsys.modeling import resolve_model
    from rlsys.modeling.resolve import random_llama_dir

    return [("SmolLM2-135M", resolve_model("smollm2-135m-instruct")),
            ("random Llama 768x12 (~0.5 GB)", random_llama_dir(
                "bench-llama-768x12", hidden_size=768, num_hidden_layers=12,
                num_attention_heads=12, num_key_value_heads=12, intermediate_size=2048))]


def _timed_syncs(worker, make_payload, reps: int) -> tuple[float, float, int]:
    """(first sync s, median of the next ``reps`` syncs s, payload bytes)."""
    times, nbytes = [], 0
    for _ in range(reps + 1):
        t0 = time.perf_counter()
        payload = make_payload()
        worker.update_weights(payload)
        times.append(time.perf_counter() - t0)
        nbytes = payload.nbytes
    return times[0], statistics.median(times[1:]), nbytes


def bench_sync(name: str, model_dir: str, reps: int) -> list[dict]:
    """Rows of the sync table for one model."""
    from actors.rollout import RolloutWorker
    from actors.weight_sync import pack_state_dict
    from learner.lora import merged_state, sync_meta, wrap_lora
    from rlsys.modeling.load import load_causal_lm
    from rlsys.modeling.lora import adapter_from_module_state

    torch.manual_seed(0)
    module = wrap_lora(load_causal_lm(model_dir), LORA, value_head=False, model_dir=model_dir)
    with torch.no_grad():
        for pname, param in module.named_parameters():
            if ".lora_B." in pname:
                param.normal_(0, 0.01)
    meta = {"lora": sync_meta(module)}
    payloads = {
        "full": lambda: pack_state_dict(merged_state(module, module.state_dict())),
        "adapter": lambda: pack_state_dict(adapter_from_module_state(module.state_dict()), meta),
    }
    rows = []
    for path in ("full", "adapter", "adapter+merge"):
        worker = RolloutWorker("hf", model_dir, chat_template=False)
        if path == "adapter+merge":
            worker.engine.load_adapter = None  # the vLLM engine's behaviour
        make = payloads["full" if path == "full" else "adapter"]
        first, median, nbytes = _timed_syncs(worker, make, reps)
        rows.append({"model": name, "path": path, "bytes": nbytes, "first_s": first,
                     "s": median})
        worker.close()
    return rows


def rss_child(mode: str) -> None:
    """One learner configuration; prints its peak RSS in MB as JSON (subprocess entry)."""
    from learner.launch import free_port
    from learner.learner import Learner
    from rlsys.modeling import resolve_model
    from rlsys.types import TokenBatch

    lora = LORA if mode.startswith("lora") else None
    learner = Learner(model_path=resolve_model("smollm2-135m-instruct"), lr=1e-5, lora=lora,
                      master_port=free_port())
    ids = torch.randint(10, 2000, (4, 128), generator=torch.Generator().manual_seed(0))
    positions = torch.arange(128).expand(4, 128).clone()
    mask = positions >= 32  # a 32-token prompt, 96 trained tokens per row
    batch = TokenBatch(ids, positions, torch.ones_like(ids), mask)
    if mode == "ref_only":  # the full fine-tuning reference group: forwards only
        learner.forward_logprobs(batch)
    else:
        if mode == "lora+ref":
            learner.forward_ref_logprobs(batch)
        learner.train_sft([batch], num_tokens=int(batch.mask.sum()))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with open("/proc/self/status") as f:  # resident now, after the step (Linux)
        now_kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    print(json.dumps({"mode": mode, "peak_mb": peak_mb, "after_mb": now_kb / 1024}))


def _rss(mode: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--rss-child", mode], check=True,
                         capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_rss() -> list[dict]:
    """RSS rows (peak, and resident after the step): full, full + reference process, LoRA,
    LoRA + disabled-adapter reference."""
    full, ref, lora, lora_ref = (_rss(m) for m in ("full", "ref_only", "lora", "lora+ref"))

    def row(config: str, processes: int, *parts: dict[str, float]) -> dict:
        return {"config": config, "processes": processes,
                "peak_mb": sum(p["peak_mb"] for p in parts),
                "after_mb": sum(p["after_mb"] for p in parts)}

    return [row("full fine-tuning", 1, full),
            row("full fine-tuning + KL reference", 2, full, ref),
            row("LoRA r=16", 1, lora),
            row("LoRA r=16 + KL reference (adapters disabled)", 1, lora_ref)]


def main() -> None:
    """Run both benchmarks, print and write the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--rss-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__),
                                                      "lora_results.md"))
    parser.add_argument("--parts", default="sync,rss", help="parts to measure; the others are "
                        "read back from the JSON saved beside --out by an earlier run")
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.rss_child)
        return
    torch.set_num_threads(1)
    load = os.getloadavg()[0]
    saved_path = os.path.splitext(args.out)[0] + ".json"
    saved = json.load(open(saved_path)) if os.path.exists(saved_path) else {}
    parts = args.parts.split(",")
    sync_rows = [r for name, d in _models() for r in bench_sync(name, d, args.reps)] \
        if "sync" in parts else saved["sync"]
    print(json.dumps(sync_rows), flush=True)
    rss_rows = bench_rss() if "rss" in parts else saved["rss"]
    with open(saved_path, "w") as f:
        sync_load = load if "sync" in parts else saved.get("sync_load", saved.get("load"))
        json.dump({"sync": sync_rows, "rss": rss_rows, "load": load, "sync_load": sync_load},
                  f, indent=1)
    lines = ["# LoRA on CPU: weight sync and learner memory", "",
             f"Command: `.venv/bin/python bench/bench_lora.py --reps {args.reps}`; machine: "
             f"{platform.machine()}, {os.cpu_count()} cores, 1-minute load average {load:.1f} "
             "at the start (seconds on a loaded machine are upper bounds; bytes are exact).",
             "", "## Bytes and seconds per weight sync (r=16, q/k/v/o/gate/up/down)", "",
             *([] if "sync" in parts else [
                 f"(Measured by an earlier run of the same command, load average "
                 f"{saved.get('sync_load', saved.get('load', 0)):.1f} at its start.)", ""]),
             "| model | path | MB | x fewer bytes | first s | s (median) |",
             "|---|---|---|---|---|---|"]
    for row in sync_rows:
        full = next(r for r in sync_rows if r["model"] == row["model"] and r["path"] == "full")
        lines.append(f"| {row['model']} | {row['path']} | {row['bytes'] / 1e6:.2f} | "
                     f"{full['bytes'] / row['bytes']:.1f} | {row['first_s']:.3f} | "
                     f"{row['s']:.3f} |")
    lines += ["", "## Learner peak RSS (SmolLM2-135M, fp32, ZeRO-0, one SFT step, 4 x 128 tokens)",
              "", "Peak RSS is dominated by loading (checkpoint tensors and the model briefly "
             "coexist); the resident set after the step shows what training keeps.", "",
             "| configuration | processes | peak RSS MB | RSS after the step MB |",
             "|---|---|---|---|"]
    lines += [f"| {r['config']} | {r['processes']} | {r['peak_mb']:.0f} | "
              f"{r['after_mb']:.0f} |" for r in rss_rows]
    text = "\n".join(lines) + "\n"
    print(text)
    with open(args.out, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
