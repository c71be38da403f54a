"""GPU check of the driver-free weight sync (``actors.collective``), without vLLM or Ray.

``collective_sync`` is called by ``scripts/gpu_check_core.py`` after its GRPO steps: the
learner (this process) is rank 0 of a two-member weight group (``Learner.open_weight_group`` /
``join_weight_group`` / ``send_weights``, the product's sender), a spawned process is rank 1
with an ``HFEngine`` (the product's receiver: ``actors.collective.receive_state`` then
``HFEngine.load_weights`` per bucket, as ``RolloutWorker.receive_weights`` does). Buckets are
small (``--sync-bucket-mb``, default 1 MB) so tensors split across buckets. The receiver's
teacher-forced log-probs must match the learner's.

Backend: NCCL with two GPUs (learner on ``cuda:0``, receiver on ``cuda:1``); with one GPU NCCL
refuses two ranks on one device, so gloo carries the buckets through host memory into the GPU
model and the NCCL run is reported as skipped; the CPU dry run uses gloo on the CPU.
"""

from __future__ import annotations

import queue as queue_module
import time

import torch
import torch.multiprocessing as mp

from scripts.gpu_check import RESULTS, check, log


def collective_receiver(model_dir: str, spec: dict, device: str, dtype: str, probe_lists,
                        queue) -> None:
    """Spawned process: join the group as rank 1, receive into an HF engine, report log-probs."""
    from actors.collective import GroupSpec, WeightGroup, receive_state
    from actors.engines.hf import HFEngine

    try:
        if device.startswith("cuda"):
            torch.cuda.set_device(torch.device(device))
        engine = HFEngine(model_dir, dtype=dtype, device=device)
        group = WeightGroup(GroupSpec(**spec), 1)
        group.join(torch.device(device) if spec["backend"] == "nccl" else None)
        start, count = time.perf_counter(), 0
        buffers = device if spec["backend"] == "nccl" else "cpu"
        for _, tensors in receive_state(group, buffers):
            engine.load_weights(tensors)
            count += len(tensors)
        seconds = time.perf_counter() - start
        queue.put(("ok", count, seconds, engine.score_logprobs(*probe_lists)))
    except Exception as exc:  # report to the parent instead of dying silently
        queue.put(("error", repr(exc), 0.0, None))


def collective_sync(learner, model_dir: str, probe, *, cpu: bool, dtype: str,
                    bucket_mb: float = 1.0) -> None:
    """Broadcast the learner's weights to a spawned HF engine and compare log-probs."""
    gpus = 0 if cpu else torch.cuda.device_count()
    backend = "nccl" if gpus >= 2 else "gloo"
    device = "cpu" if cpu else ("cuda:1" if gpus >= 2 else "cuda:0")
    if not cpu and gpus < 2:
        log("SKIP sync[collective-nccl]: one GPU (NCCL refuses two ranks on one device); "
            "checking the gloo bucket path into the GPU model instead")
    name = f"sync[collective-{backend}]"
    spec = learner.open_weight_group("127.0.0.1", 2, 1, backend, 300.0)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=collective_receiver,
                       args=(model_dir, spec, device, dtype, probe[:2], queue))
    proc.start()
    try:
        learner.join_weight_group(spec)
        start = time.perf_counter()
        stats = learner.send_weights(1, int(bucket_mb * 2**20))
        send_s = time.perf_counter() - start
        status, count, load_s, logprobs = queue.get(timeout=300)
    except queue_module.Empty:
        status, count, load_s, logprobs = (
            "error", f"no answer in 300 s, receiver exit code {proc.exitcode}", 0.0, None)
    except Exception as exc:  # the sender failed: report it as this check
        status, count, load_s, logprobs = "error", f"sender: {exc!r}", 0.0, None
    proc.join(timeout=60)
    if status != "ok":
        check(name, False, f"failed: {count}")
        return
    with torch.no_grad():
        tokens = probe[2]
        learner_lp = learner.forward_logprobs(tokens).float().cpu()[tokens.mask]
        gap = float((torch.tensor([x for row in logprobs for x in row]) - learner_lp).abs()
                    .mean())
    gb = stats["bytes"] / 1e9
    check(name, gap < 0.05 and count == stats["tensors"],
          f"{count} tensors, {gb:.3f} GB in {stats['buckets']:.0f} buckets of {bucket_mb} MB: "
          f"send {send_s:.3f}s, receive+load {load_s:.3f}s ({gb / max(send_s, 1e-9):.2f} GB/s); "
          f"receiver vs learner log-prob gap {gap:.4f}")
    RESULTS[f"collective_{backend}_GB_per_s"] = round(gb / max(send_s, 1e-9), 2)
