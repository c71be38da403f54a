"""GPU check of the vLLM rollout path: throughput, weight sync and a few GRPO-like steps.

Run through ``scripts/gpu_check.sh`` on a machine with official vLLM (CUDA). Everything runs on a
randomly initialised Llama saved locally (no downloads, no tokenizer: token-id prompts and
``skip_tokenizer_init``). Steps, each printed with its timing:

1. ``VLLMEngine`` generation throughput (tokens/s).
2. Weight sync into vLLM, each verified by teacher-forced log-probs (vLLM ``prompt_logprobs``
   vs the learner's forward on the same tokens): the packed host path (``load_weights``), the
   colocated CUDA-IPC path (``load_weights_ipc``), and the RL loop's own weight group over NCCL
   when a second GPU holds the learner (``GroupSender``: the learner is rank 0 of an
   ``actors.collective.WeightGroup`` and broadcasts bucketed weights with ``send_state``; the
   vLLM worker is rank 1 through ``VLLMEngine.join_weight_group`` / ``receive_weights`` and
   reloads straight from the NCCL buckets on its GPU) -- NCCL refuses two ranks on one device,
   so with one GPU it is reported as skipped.
3. ``--steps`` GRPO-like steps: generate -> dummy reward (share of token ids below vocab/2) ->
   group-normalised advantages -> policy-gradient update of the learner on GPU -> sync.
4. Adapter-only sync through vLLM's native LoRA support (``scripts/gpu_check_lora.py``): a
   second engine with ``lora_sync="native"``, two r=16 adapters loaded as ``LoRARequest``s,
   each verified by log-probs like the full syncs (``--skip-lora`` leaves it out).

Exits non-zero when a check fails. Not a test: it prints numbers, it does not assert speed.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import time

import torch

RESULTS: dict[str, object] = {}
FAILURES: list[str] = []


def log(msg: str) -> None:
    """Print a progress line immediately."""
    print(f"[gpu_check] {msg}", flush=True)


def check(name: str, ok: bool, detail: str) -> None:
    """Record a pass/fail line."""
    log(f"{'PASS' if ok else 'FAIL'} {name}: {detail}")
    if not ok:
        FAILURES.append(name)


def build_model(out_dir: str, seed: int, args: argparse.Namespace) -> None:
    """Save a random bf16 Llama (no tokenizer) to ``out_dir``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden,
                         num_hidden_layers=args.layers, num_attention_heads=args.hidden // 64,
                         num_key_value_heads=max(1, args.hidden // 256),
                         intermediate_size=args.hidden * 3, max_position_embeddings=2048,
                         tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(seed)
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(out_dir)


def random_prompts(count: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    """Token-id prompts avoiding the special ids 0-2."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (count, length), generator=gen).tolist()


def padded_batch(prompts: list[list[int]], responses: list[list[int]], device: torch.device):
    """Right-padded ``input_ids`` (B, T), ``attention_mask`` and response ``mask`` (B, T)."""
    rows = [p + r for p, r in zip(prompts, responses, strict=True)]
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    attn = torch.zeros_like(ids)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, (p, row) in enumerate(zip(prompts, rows, strict=True)):
        ids[i, : len(row)] = torch.tensor(row)
        attn[i, : len(row)] = 1
        mask[i, len(p) : len(row)] = True
    return ids.to(device), attn.to(device), mask.to(device)


def learner_logprobs(model, prompts, responses, device) -> list[list[float]]:
    """Teacher-forced log-probs of the responses under the learner (bf16 autocast)."""
    from rlsys.algo.logprobs import token_logprobs

    ids, attn, _ = padded_batch(prompts, responses, device)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16,
                                         enabled=device.type == "cuda"):
        logits = model(input_ids=ids, attention_mask=attn).logits
    logprobs = token_logprobs(logits.float(), ids)
    return [logprobs[i, len(p) : len(p) + len(r)].tolist()
            for i, (p, r) in enumerate(zip(prompts, responses, strict=True))]


def mean_abs_gap(a: list[list[float]], b: list[list[float]]) -> float:
    """Mean |a - b| over all tokens."""
    flat_a = torch.tensor([x for row in a for x in row])
    flat_b = torch.tensor([x for row in b for x in row])
    return float((flat_a - flat_b).abs().mean())


def verify_sync(name, engine, learner, probe, device, sync, require_move=True) -> float:
    """Run ``sync()``; check the engine's log-probs now match the learner's (and, with
    ``require_move``, that they were at least 4x further apart before). Returns seconds."""
    prompts, responses = probe
    target = learner_logprobs(learner, prompts, responses, device)
    before = mean_abs_gap(engine.score_logprobs(prompts, responses), target)
    start = time.perf_counter()
    sync()
    seconds = time.perf_counter() - start
    after = mean_abs_gap(engine.score_logprobs(prompts, responses), target)
    check(f"sync[{name}]", after < 0.05 and (after < before / 4 or not require_move),
          f"{seconds:.2f}s, mean |vllm - learner| log-prob gap {before:.4f} -> {after:.4f}")
    RESULTS[f"sync_{name}_s"] = round(seconds, 3)
    return seconds


@torch.no_grad()
def perturb(model, scale: float, seed: int) -> None:
    """Add Gaussian noise to every parameter (a stand-in for a big training update)."""
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    for param in model.parameters():
        param.add_(torch.randn(param.shape, generator=gen, device=param.device,
                               dtype=param.dtype) * scale)


def free_port() -> int:
    """An unused TCP port on localhost."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def throughput(engine, args) -> None:
    """Step 1: sampled tokens per second."""
    prompts = random_prompts(args.prompts, 64, args.vocab, seed=0)
    engine.generate(prompts[:4], n=1, temperature=1.0, top_p=1.0, max_new_tokens=8, seed=0,
                    stop_token_ids=[])  # warm-up
    start = time.perf_counter()
    out = engine.generate(prompts, n=args.n, temperature=1.0, top_p=1.0,
                          max_new_tokens=args.max_new_tokens, seed=0, stop_token_ids=[])
    seconds = time.perf_counter() - start
    tokens = sum(len(c.response_ids) for c in out)
    ok = len(out) == args.prompts * args.n and all(len(c.logprobs) == len(c.response_ids)
                                                    for c in out)
    check("generate", ok, f"{len(out)} samples, {tokens} tokens in {seconds:.2f}s = "
          f"{tokens / seconds:,.0f} tok/s")
    RESULTS["generate_tok_per_s"] = round(tokens / seconds)


def grpo_step(engine, learner, optimizer, step, args, device, sync) -> dict[str, float]:
    """Step 3: one generate -> reward -> policy-gradient update -> sync round."""
    from rlsys.algo.logprobs import token_logprobs

    t0 = time.perf_counter()
    prompts = random_prompts(args.grpo_prompts, 32, args.vocab, seed=100 + step)
    out = engine.generate(prompts, n=args.n, temperature=1.0, top_p=1.0, max_new_tokens=64,
                          seed=step, stop_token_ids=[])
    t1 = time.perf_counter()
    rewards = torch.tensor([sum(t < args.vocab // 2 for t in c.response_ids)
                            / max(1, len(c.response_ids)) for c in out], device=device)
    grouped = rewards.view(-1, args.n)  # (prompts, n), completions are grouped by prompt
    advantages = ((grouped - grouped.mean(1, keepdim=True))
                  / (grouped.std(1, keepdim=True) + 1e-6)).view(-1)  # (B,)
    ids, attn, mask = padded_batch([c.prompt_ids for c in out], [c.response_ids for c in out],
                                   device)
    rollout = torch.zeros(mask.shape, device=device)
    for i, c in enumerate(out):
        rollout[i, mask[i]] = torch.tensor(c.logprobs, device=device)
    learner.train()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        logits = learner(input_ids=ids, attention_mask=attn).logits
    logprobs = token_logprobs(logits.float(), ids)  # (B, T)
    loss = -(advantages[:, None] * logprobs * mask).sum() / mask.sum()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    learner.eval()
    mismatch = float(((logprobs.detach() - rollout).abs() * mask).sum() / mask.sum())
    t2 = time.perf_counter()
    sync()
    t3 = time.perf_counter()
    tokens = int(mask.sum())
    return {"step": step, "reward": round(float(rewards.mean()), 4),
            "loss": round(float(loss.detach()), 4),
            "rollout_vs_learner_logprob_gap": round(mismatch, 4),
            "gen_s": round(t1 - t0, 3), "train_s": round(t2 - t1, 3), "sync_s": round(t3 - t2, 3),
            "gen_tok_per_s": round(tokens / (t1 - t0))}


def parse_args() -> argparse.Namespace:
    """Command-line options (defaults fit one H100 in well under 8 minutes)."""
    parser = argparse.ArgumentParser(description="rlsys GPU check")
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--grpo-prompts", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.35)
    parser.add_argument("--cuda-graphs", action="store_true",
                        help="let vLLM capture CUDA graphs (slower start, faster decode)")
    parser.add_argument("--skip-lora", action="store_true",
                        help="leave out step 4 (native vLLM LoRA adapter sync)")
    return parser.parse_args()


def main() -> int:
    """Run every step; return the process exit code."""
    from transformers import LlamaForCausalLM

    from actors.engines.vllm import VLLMEngine

    args = parse_args()
    if not torch.cuda.is_available():
        log("FAIL: no CUDA device visible")
        return 1
    log(f"torch {torch.__version__}, {torch.cuda.device_count()} GPU(s): "
        f"{torch.cuda.get_device_name(0)}")
    # vLLM's worker takes cuda:0; with a second GPU the learner goes there and NCCL is possible.
    two_gpus = torch.cuda.device_count() >= 2
    device = torch.device("cuda:1" if two_gpus else "cuda:0")
    with tempfile.TemporaryDirectory(prefix="rlsys-gpu-check-") as tmp:
        build_model(f"{tmp}/a", 0, args)
        build_model(f"{tmp}/b", 1, args)
        start = time.perf_counter()
        engine = VLLMEngine(f"{tmp}/a", dtype="bfloat16",
                            gpu_memory_utilization=args.gpu_memory_utilization,
                            max_model_len=1024, enforce_eager=not args.cuda_graphs, seed=0,
                            llm_kwargs={"skip_tokenizer_init": True})
        log(f"vLLM engine up in {time.perf_counter() - start:.1f}s")
        try:
            throughput(engine, args)
            learner = LlamaForCausalLM.from_pretrained(f"{tmp}/b", dtype=torch.float32)
            learner = learner.to(device).eval()
            probe_out = engine.generate(random_prompts(8, 32, args.vocab, seed=7), n=1,
                                        temperature=1.0, top_p=1.0, max_new_tokens=32, seed=1,
                                        stop_token_ids=[])
            probe = ([c.prompt_ids for c in probe_out], [c.response_ids for c in probe_out])
            sender = run_syncs(engine, learner, probe, device, two_gpus)
            sync = make_step_sync(engine, learner, device, sender)
            optimizer = torch.optim.AdamW(learner.parameters(), lr=1e-4)
            for step in range(args.steps):
                stats = grpo_step(engine, learner, optimizer, step, args, device, sync)
                log(f"grpo {json.dumps(stats)}")
                RESULTS.setdefault("grpo", []).append(stats)  # type: ignore[union-attr]
            verify_sync("after-grpo", engine, learner, probe, device, sync, require_move=False)
        finally:
            engine.close()
        if not args.skip_lora:
            from scripts.gpu_check_lora import lora_sync_check

            del learner
            lora_sync_check(f"{tmp}/b", probe, device,
                            gpu_memory_utilization=args.gpu_memory_utilization,
                            llm_kwargs={"skip_tokenizer_init": True})
    log(f"results {json.dumps(RESULTS)}")
    log("OK" if not FAILURES else f"FAILED: {', '.join(FAILURES)}")
    return 0 if not FAILURES else 1


class GroupSender:
    """The learner side of the RL loop's weight group (``actors.collective``) for this script:
    rank 0 of a group with the vLLM engine's workers, formed on first use; each ``__call__``
    broadcasts the learner's weights in buckets while the engine receives in a thread."""

    def __init__(self, engine, learner, device, bucket_mb: float = 64.0) -> None:
        self.engine, self.learner, self.device = engine, learner, device
        self.bucket_bytes, self.version, self.group = int(bucket_mb * 2**20), 0, None

    def _form(self) -> None:
        from actors.collective import WeightGroup
        from actors.engines.vllm import _run_in_thread

        world = 1 + self.engine.weight_group_ranks
        self.group = WeightGroup.host("127.0.0.1", world, 1, "nccl", 300.0)
        joined = _run_in_thread(self.engine.join_weight_group, self.group.spec.as_dict(), 1)
        self.group.join(self.device)
        joined.result()

    def __call__(self) -> dict[str, float]:
        from actors.collective import send_state
        from actors.engines.vllm import _run_in_thread

        if self.group is None:
            self._form()
        self.version += 1
        received = _run_in_thread(self.engine.receive_weights, self.version)
        stats = send_state(self.group, self.learner.state_dict().items(),
                           bucket_bytes=self.bucket_bytes, meta={"version": self.version},
                           device=self.device)
        received.result()
        return stats


def run_syncs(engine, learner, probe, device, two_gpus: bool):
    """Step 2: every weight-sync path, each after a change of the learner's weights.

    Returns the NCCL weight-group sender (two GPUs) or None.
    """
    verify_sync("packed-host", engine, learner, probe, device,
                lambda: engine.load_weights(learner.state_dict().items()))
    if device.type != "cuda":
        return None
    perturb(learner, 0.02, seed=1)
    verify_sync("cuda-ipc", engine, learner, probe, device,
                lambda: engine.load_weights_ipc(learner.state_dict(), device))
    if not two_gpus:
        log("SKIP sync[weight-group-nccl]: needs a second GPU for the learner "
            "(NCCL cannot put two ranks on one device); CUDA IPC covers the colocated case")
        return None
    sender = GroupSender(engine, learner, device)
    perturb(learner, 0.02, seed=2)
    verify_sync("weight-group-nccl", engine, learner, probe, device, sender)
    return sender


def make_step_sync(engine, learner, device, sender):
    """The sync used after each GRPO step: the NCCL weight group if set up, else CUDA IPC."""
    if sender is not None:
        return sender
    if device.type == "cuda":
        return lambda: engine.load_weights_ipc(learner.state_dict(), device)
    return lambda: engine.load_weights(learner.state_dict().items())


if __name__ == "__main__":  # vLLM spawns worker processes: keep this guard
    # scripts.gpu_check_lora imports this file as scripts.gpu_check: one RESULTS/FAILURES
    sys.modules.setdefault("scripts.gpu_check", sys.modules[__name__])
    sys.exit(main())
