"""GPU check of everything on the rollout/learner path that needs neither vLLM nor Ray.

Run through ``scripts/gpu_check.sh`` (it runs this first, then ``gpu_check.py`` when vLLM is
installed) or alone: ``python scripts/gpu_check_core.py``. A randomly initialised Llama with the
SmolLM2 tokenizer is built into ``$RLSYS_CACHE`` (the tokenizer must already be cached there;
nothing is downloaded). Steps, each printed with its timing:

1. ``HFEngine`` on CUDA (bf16): sampling throughput (tokens/s).
2. The DeepSpeed ``Learner`` on CUDA (NCCL process group of one rank, bf16, the recipe's ZeRO
   stage): packed-row forward equals the one-document-per-row forward.
3. ``--steps`` GRPO steps with the product's pieces: ``HFEngine.generate`` -> a learnable
   token-level reward (share of response ids below vocab/2) -> ``build_experience`` +
   ``compute_advantages`` (GRPO) -> ``Learner.train_policy`` (clip-higher, token-mean) ->
   ``Learner.state_dict_for_sync`` -> ``HFEngine.load_weights``; after each sync the engine's
   teacher-forced log-probs must match the learner's (and must not before the sync).
4. The RL loop's colocated CUDA-IPC weight sync (``rollout.weight_sync: ipc``) into another
   process on the same GPU: ``Learner.ipc_payload`` here, ``RolloutWorker.load_ipc`` (HF
   engine) in a spawned process, ``Learner.release_ipc``; the receiver's log-probs must match
   (vLLM's side, ``rlsys_load_ipc``, is checked by ``scripts/gpu_check.py``).

5. Driver-free weight sync (``scripts/gpu_check_collective.py``): the learner broadcasts
   bucketed weights to an HF engine in a spawned process over NCCL (two GPUs) or gloo (one
   GPU, and the CPU dry run); the receiver's log-probs must match.

Not covered here (needs vLLM, or a second GPU): vLLM generation, the NCCL broadcast (NCCL
refuses two ranks on one device). Exits non-zero when a check fails; prints numbers, asserts no
speed.
"""

from __future__ import annotations

import argparse
import json
import os
import queue as queue_module
import sys
import time

import torch
import torch.multiprocessing as mp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scripts.gpu_check import FAILURES, RESULTS, check, log  # noqa: E402
from scripts.gpu_check_collective import collective_sync  # noqa: E402


def mean_abs_gap(engine_lp: list[list[float]], learner_lp: torch.Tensor, tokens) -> float:
    """Mean |engine - learner| log-prob over the response tokens of ``tokens``."""
    flat_engine = torch.tensor([x for row in engine_lp for x in row])
    flat_learner = learner_lp.float().cpu()[tokens.mask]
    return float((flat_engine - flat_learner).abs().mean())


def probe_batch(completions, pad_id: int):
    """``(prompts, responses, TokenBatch)`` of a few completions, for sync checks."""
    from rlsys.controller.experience import build_experience

    exp = build_experience(completions, [0.0] * len(completions),
                           group_ids=list(range(len(completions))), pad_id=pad_id)
    return ([c.prompt_ids for c in completions], [c.response_ids for c in completions],
            exp.tokens)


def sync_gap(engine, learner, probe) -> float:
    """Engine vs learner log-prob gap on the probe tokens."""
    prompts, responses, tokens = probe
    with torch.no_grad():
        return mean_abs_gap(engine.score_logprobs(prompts, responses),
                            learner.forward_logprobs(tokens), tokens)


def random_prompts(count: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    """Token-id prompts avoiding the low (special) ids."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(100, vocab, (count, length), generator=gen).tolist()


def throughput(engine, args) -> None:
    """Step 1: HF ``generate`` tokens per second on the GPU."""
    prompts = random_prompts(args.prompts, 64, args.vocab, seed=0)
    engine.generate(prompts[:4], n=1, max_new_tokens=8, seed=0)  # warm-up
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = engine.generate(prompts, n=args.n, temperature=1.0, max_new_tokens=args.max_new_tokens,
                          seed=0)
    seconds = time.perf_counter() - start
    tokens = sum(len(c.response_ids) for c in out)
    ok = len(out) == args.prompts * args.n and all(
        len(c.logprobs) == len(c.response_ids) for c in out)
    check("hf-generate", ok, f"{len(out)} samples, {tokens} tokens in {seconds:.2f}s = "
          f"{tokens / seconds:,.0f} tok/s")
    RESULTS["hf_generate_tok_per_s"] = round(tokens / seconds)


def packed_equals_plain(learner, args) -> None:
    """Step 2: two documents packed in one row score like the same documents in two rows."""
    from rlsys.types import TokenBatch

    a, b = random_prompts(2, 40, args.vocab, seed=3)
    b = b[:30]
    ids = torch.tensor([a + b])
    position_ids = torch.tensor([list(range(40)) + list(range(30))])
    seq_ids = torch.tensor([[1] * 40 + [2] * 30])
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[0, 0] = mask[0, 40] = False
    packed = learner.forward_logprobs(TokenBatch(ids, position_ids, seq_ids, mask))
    rows = torch.zeros(2, 40, dtype=torch.long)
    rows[0], rows[1, :30] = torch.tensor(a), torch.tensor(b)
    row_mask = torch.zeros(2, 40, dtype=torch.bool)
    row_mask[0, 1:], row_mask[1, 1:30] = True, True
    row_seq = torch.zeros(2, 40, dtype=torch.long)
    row_seq[0], row_seq[1, :30] = 1, 1
    plain = learner.forward_logprobs(TokenBatch(
        rows, torch.arange(40).expand(2, 40) * (row_seq > 0), row_seq, row_mask))
    gap = float((packed[0, :40][mask[0, :40]] - plain[0][row_mask[0]]).abs().max().item()
                + (packed[0, 40:][mask[0, 40:]] - plain[1][row_mask[1]]).abs().max().item())
    check("packed-forward", gap < 0.1, f"max |packed - per-row| log-prob gap {gap:.4f}")


def grpo_step(engine, learner, step: int, args, probe) -> dict[str, float]:
    """Step 3: one generate -> reward -> advantages -> train -> sync round."""
    from rlsys.controller.experience import build_experience, compute_advantages
    from rlsys.types import PolicyLossSpec

    t0 = time.perf_counter()
    prompts = random_prompts(args.grpo_prompts, 32, args.vocab, seed=100 + step)
    out = engine.generate(prompts, n=args.n, temperature=1.0, max_new_tokens=64, seed=step)
    t1 = time.perf_counter()
    rewards = [sum(t < args.vocab // 2 for t in c.response_ids) / max(1, len(c.response_ids))
               for c in out]
    exp = build_experience(out, rewards, group_ids=[c.prompt_index for c in out],
                           pad_id=engine.pad_id)
    exp = compute_advantages(exp, estimator="grpo", gamma=1.0, lam=1.0, norm_std=True)
    tokens = int(exp.tokens.mask.sum())
    spec = PolicyLossSpec(aggregation="token_mean", clip_low=0.2, clip_high=0.28)
    metrics = learner.train_policy([exp], spec=spec, num_tokens=tokens, num_seqs=len(out))
    t2 = time.perf_counter()
    stale = sync_gap(engine, learner, probe)
    t2b = time.perf_counter()
    engine.load_weights(learner.state_dict_for_sync().items())
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t3 = time.perf_counter()
    fresh = sync_gap(engine, learner, probe)
    check(f"sync[step {step}]", fresh < 0.05 and fresh < stale,
          f"engine vs learner log-prob gap {stale:.4f} before the sync, {fresh:.4f} after")
    return {"step": step, "reward": round(sum(rewards) / len(rewards), 4),
            "pg_loss": round(metrics["pg_loss"], 4), "clip_frac": round(metrics["clip_frac"], 4),
            "gen_s": round(t1 - t0, 3), "train_s": round(t2 - t1, 3), "sync_s": round(t3 - t2b, 3),
            "gen_tok_per_s": round(tokens / (t1 - t0)),
            "train_tok_per_s": round(tokens / (t2 - t1))}


def ipc_receiver(model_dir: str, payload, probe_lists, queue) -> None:
    """Spawned process: a ``RolloutWorker`` (HF engine on cuda:0) loads the learner's weights
    through ``load_ipc`` -- what the RL loop runs with ``rollout.weight_sync: ipc`` -- and
    returns the probe's log-probs."""
    from actors.rollout import RolloutWorker

    try:
        worker = RolloutWorker("hf", model_dir,
                               engine_kwargs={"dtype": "bfloat16", "device": "cuda:0"})
        start = time.perf_counter()
        version = worker.load_ipc(payload, 1)
        seconds = time.perf_counter() - start
        queue.put(("ok", version, seconds, worker.engine.score_logprobs(*probe_lists)))
    except Exception as exc:  # report to the parent instead of dying silently
        queue.put(("error", repr(exc), 0.0, None))


def ipc_sync(learner, model_dir: str, probe) -> None:
    """Step 4: the loop's colocated CUDA-IPC sync into another process on the same GPU:
    ``Learner.ipc_payload`` here, ``RolloutWorker.load_ipc`` in a spawned process, then
    ``Learner.release_ipc``."""
    state = learner.state_dict_for_sync()
    start = time.perf_counter()
    payload = learner.ipc_payload(1)
    export_s = time.perf_counter() - start
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=ipc_receiver, args=(model_dir, payload, probe[:2], queue))
    proc.start()
    try:
        status, version, load_s, logprobs = queue.get(timeout=300)
    except queue_module.Empty:  # the receiver died before reporting (e.g. killed, CUDA init)
        status, version, load_s, logprobs = (
            "error", f"no answer in 300 s, receiver exit code {proc.exitcode}", 0.0, None)
    proc.join(timeout=60)
    learner.release_ipc()
    if status != "ok":
        check("sync[cuda-ipc]", False, f"receiver failed: {version}")
        return
    with torch.no_grad():
        gap = mean_abs_gap(logprobs, learner.forward_logprobs(probe[2]), probe[2])
    nbytes = sum(t.numel() * t.element_size() for t in state.values())
    check("sync[cuda-ipc]", gap < 0.05 and version == 1,
          f"{len(payload['index'])} tensors, {nbytes / 1e9:.2f} GB: export {export_s:.3f}s, "
          f"load {load_s:.3f}s ({nbytes / 1e9 / max(load_s, 1e-9):.1f} GB/s); receiver vs "
          f"learner log-prob gap {gap:.4f}")
    RESULTS["ipc_load_GB_per_s"] = round(nbytes / 1e9 / max(load_s, 1e-9), 2)


def parse_args() -> argparse.Namespace:
    """Command-line options (defaults fit one H100 in a few minutes)."""
    parser = argparse.ArgumentParser(description="rlsys GPU check without vLLM")
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--grpo-prompts", type=int, default=16)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--zero-stage", type=int, default=0)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--cpu-dry-run", action="store_true",
                        help="run steps 1-3 on the CPU in float32 (to test this script)")
    return parser.parse_args()


def main() -> int:
    """Run every step; return the process exit code."""
    from actors.engines.hf import HFEngine
    from learner.learner import Learner
    from rlsys.modeling.resolve import random_llama_dir

    args = parse_args()
    device, dtype = ("cpu", "float32") if args.cpu_dry_run else ("cuda:0", "bfloat16")
    if not args.cpu_dry_run and not torch.cuda.is_available():
        log("FAIL: no CUDA device visible")
        return 1
    log(f"torch {torch.__version__}, "
        f"{'CPU dry run' if args.cpu_dry_run else torch.cuda.get_device_name(0)}")
    model_dir = random_llama_dir(
        f"gpu-llama-{args.hidden}x{args.layers}", hidden_size=args.hidden,
        num_hidden_layers=args.layers, num_attention_heads=args.hidden // 64,
        num_key_value_heads=max(1, args.hidden // 256), intermediate_size=args.hidden * 3,
        tie_word_embeddings=False)
    start = time.perf_counter()
    engine = HFEngine(model_dir, dtype=dtype, device=device, max_batch_size=256)
    args.vocab = engine.model.config.vocab_size
    log(f"HF engine up in {time.perf_counter() - start:.1f}s "
        f"({sum(p.numel() for p in engine.model.parameters()) / 1e6:.0f}M parameters)")
    throughput(engine, args)
    start = time.perf_counter()
    learner = Learner(model_path=model_dir, dtype=dtype, zero_stage=args.zero_stage,
                      lr=args.lr, seed=0, num_threads=None)
    log(f"DeepSpeed learner up in {time.perf_counter() - start:.1f}s on {learner.device} "
        f"(ZeRO {args.zero_stage}, {learner.info()})")
    packed_equals_plain(learner, args)
    probe = probe_batch(engine.generate(random_prompts(8, 24, args.vocab, seed=7), n=1,
                                        max_new_tokens=24, seed=1), engine.pad_id)
    initial = sync_gap(engine, learner, probe)
    check("sync[initial]", initial < 0.05, f"same weights: gap {initial:.4f}")
    for step in range(args.steps):
        stats = grpo_step(engine, learner, step, args, probe)
        log(f"grpo {json.dumps(stats)}")
        RESULTS.setdefault("grpo", []).append(stats)  # type: ignore[union-attr]
    rewards = [s["reward"] for s in RESULTS["grpo"]]  # type: ignore[index]
    log(f"GRPO reward by step: {rewards}")
    if not args.cpu_dry_run:
        ipc_sync(learner, model_dir, probe)
    collective_sync(learner, model_dir, probe, cpu=args.cpu_dry_run, dtype=dtype)
    engine.close()
    log(f"results {json.dumps(RESULTS)}")
    log("OK" if not FAILURES else f"FAILED: {', '.join(FAILURES)}")
    return 0 if not FAILURES else 1


if __name__ == "__main__":  # spawned receivers re-import this module: keep the guard
    sys.exit(main())
