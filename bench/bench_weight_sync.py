"""Weight-sync throughput on CPU: learner state dict -> Ray object store -> HF rollout actor.

Builds a random ~0.5 GB fp32 Llama (no download), starts one ``hf`` rollout worker through
``actors.launch``, and times, per sync:

* ``pack``  -- ``pack_state_dict`` on the learner side (one flat buffer per dtype);
* ``put``   -- ``ray.put`` of the payload;
* ``get``   -- the remote call minus the worker's own load time: Ray resolving the ObjectRef
  argument (shared-memory mapping for numpy buffers) plus RPC overhead;
* ``load``  -- unpack + copy into the model's parameters inside the worker;
* ``e2e``   -- pack + put + the remote call.

It also times the naive path (a plain dict of torch tensors, pickled by Ray) for comparison.
Prints a table and writes ``bench/weight_sync_results.md``. Run:
``.venv/bin/python bench/bench_weight_sync.py [--reps 3] [--hidden 768 --layers 12]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time

import ray
import torch

from actors.launch import launch_rollout_workers
from actors.weight_sync import pack_state_dict

LOAD_AT_START = os.getloadavg()[0]  # recorded in the results: was the machine idle?


def build_model(out_dir: str, hidden: int, layers: int) -> dict[str, torch.Tensor]:
    """Save a random Llama (SmolLM2 tokenizer) to ``out_dir``; return its state dict."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from rlsys.modeling import default_cache_dir
    from rlsys.modeling.builders import build_smollm2_tokenizer
    from rlsys.modeling.resolve import ensure_built

    tokenizer = AutoTokenizer.from_pretrained(
        ensure_built(default_cache_dir(), "smollm2-tokenizer", build_smollm2_tokenizer))
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                         num_attention_heads=hidden // 64, num_key_value_heads=hidden // 64,
                         intermediate_size=hidden * 8 // 3, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.float32)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return model.state_dict()  # tied embedding: two names, one storage


def time_sync(pool, state: dict[str, torch.Tensor], packed: bool) -> dict[str, float]:
    """One sync through the pool's only worker; returns seconds per phase."""
    handle = pool.handles[0]
    t0 = time.perf_counter()
    payload = pack_state_dict(state) if packed else state
    t1 = time.perf_counter()
    ref = ray.put(payload)
    t2 = time.perf_counter()
    ray.get(handle.update_weights.remote(ref), timeout=600)
    t3 = time.perf_counter()
    load = ray.get(handle.ping.remote(), timeout=60)["last_load_s"]
    del ref, payload
    return {"pack": t1 - t0, "put": t2 - t1, "get": (t3 - t2) - load, "load": load,
            "e2e": t3 - t0}


def main() -> None:
    """Run the benchmark and write the results table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__),
                                                      "weight_sync_results.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench-weight-sync-") as model_dir:
        state = build_model(model_dir, args.hidden, args.layers)
        nbytes = pack_state_dict(state).nbytes  # unique bytes (the tied embedding once)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        pool = launch_rollout_workers(1, "hf", model_dir, {"max_batch_size": 1, "num_threads": 1},
                                      num_cpus=1, timeout_s=600)
        try:
            rows = {}
            for label, packed in (("packed (numpy buffers)", True), ("naive (torch dict)", False)):
                time_sync(pool, state, packed)  # warm-up
                runs = [time_sync(pool, state, packed) for _ in range(args.reps)]
                rows[label] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        finally:
            pool.close()
            ray.shutdown()
    report(rows, nbytes, len(state), args)


def report(rows: dict[str, dict[str, float]], nbytes: int, num_tensors: int, args) -> None:
    """Print the table and write it as markdown to ``args.out``."""
    gb = nbytes / 1e9
    header = "| path | pack s | put s | get s | load s | e2e s | e2e GB/s |"
    lines = [header, "|---|---|---|---|---|---|---|"]
    for label, r in rows.items():
        lines.append(f"| {label} | {r['pack']:.3f} | {r['put']:.3f} | {r['get']:.3f} | "
                     f"{r['load']:.3f} | {r['e2e']:.3f} | {gb / r['e2e']:.2f} |")
    text = "\n".join([
        "# Weight sync on CPU (Ray object store -> HF rollout actor)",
        "",
        f"State dict: {num_tensors} fp32 tensors, {gb:.3f} GB unique (random Llama, hidden "
        f"{args.hidden}, {args.layers} layers, tied 49,152-token embedding). Median of "
        f"{args.reps} syncs after one warm-up; one learner (driver) and one rollout actor on "
        f"the same node, `ray.init(num_cpus=2)`, torch 1 thread; machine: "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, 1-minute load "
        f"average {LOAD_AT_START:.2f} at the start (about 0 = idle).",
        "",
        "`get` = remote call time minus the worker's load time (argument resolution from the "
        "object store + RPC); `load` = unpack + copy into the parameters; `e2e` = pack + put "
        "+ remote call.",
        "",
        *lines,
        "",
    ])
    print(text)
    with open(args.out, "w") as handle:
        handle.write(text)


if __name__ == "__main__":
    main()
