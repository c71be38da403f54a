"""Rollout engine on Hugging Face ``transformers.generate`` (CPU or one GPU).

Prompts are left-padded and sampled in batches with the KV cache (``num_return_sequences=n``);
per-token log-probs come from ``output_logits`` (raw mode) or ``output_scores`` (processed
mode, after temperature/top-p), so no second forward pass is needed. All ``n * prompts`` step
logits are held until the batch ends, so ``max_batch_size`` (rows per ``generate`` call) bounds
memory at about ``rows * max_new_tokens * vocab * 8`` bytes.

Multi-turn episodes: ``generate(..., keep_kv=True)`` keeps each finished row's KV cache in a
``TurnCache`` (``actors/engines/hf_turn_cache.py``); the next call's prompts that extend a kept
row prefill only their new tokens (the observation), not the whole conversation again. Every
weight or adapter load clears it (``turn_cache_mb`` bounds it; 0 turns it off).

LoRA: ``load_adapter`` wraps the model with ``peft`` adapter layers (once per adapter layout)
and copies the adapter tensors into them in place, so an adapter-only weight sync moves only the
adapter; a full ``load_weights`` removes the adapter layers first (without merging them).

This engine does not do continuous batching or paged attention (use vLLM for throughput).
"""

from __future__ import annotations

import gc
from collections.abc import Iterable
from typing import Any

import torch

from actors.engines.base import LOGPROBS_MODES, check_sampling_args, trim_at_stop
from actors.engines.hf_turn_cache import (
    TurnCache,
    TurnEntry,
    is_plain_dynamic,
    left_padded_cache,
    row_layers,
)
from rlsys.types import Completion


class HFEngine:
    """``RolloutEngine`` backed by ``AutoModelForCausalLM.generate``.

    Args:
        model_path: local Hugging Face model directory (with tokenizer).
        dtype: ``float32`` (CPU default), ``bfloat16`` or ``float16``.
        device: torch device string, e.g. ``"cpu"`` or ``"cuda:0"``.
        max_batch_size: most sequences (prompts x n) per ``generate`` call.
        num_threads: if set, ``torch.set_num_threads`` for this process (worker processes only).
        logprobs_mode: ``"raw"`` or ``"processed"`` (see ``actors.engines.base``).
        share_prefill: with ``n > 1``, run each prompt's prefill once and copy its KV cache to
            the ``n`` samples (instead of prefilling every copy); the tokens drawn are the same
            up to float rounding.
        turn_cache_mb: most MiB of KV kept between the turns of multi-turn episodes (see
            ``keep_kv``); 0 disables reuse.
    """

    #: ``actors.episodes`` passes ``keep_kv`` to engines that say so
    reuses_turn_kv = True

    def __init__(
        self,
        model_path: str,
        *,
        dtype: str = "float32",
        device: str = "cpu",
        max_batch_size: int = 32,
        num_threads: int | None = None,
        logprobs_mode: str = "raw",
        share_prefill: bool = True,
        turn_cache_mb: int = 1024,
    ) -> None:
        from rlsys.modeling.load import load_causal_lm, load_tokenizer

        if logprobs_mode not in LOGPROBS_MODES:
            raise ValueError(
                f"logprobs_mode must be one of {LOGPROBS_MODES}, got {logprobs_mode!r}")
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        self.model_path = model_path
        self.device = torch.device(device)
        self.max_batch_size = max_batch_size
        self.logprobs_mode = logprobs_mode
        self.share_prefill = share_prefill
        self.tokenizer = load_tokenizer(model_path)
        # Any: a transformers PreTrainedModel, a peft PeftModel around it after load_adapter,
        # None after close(); their attributes are resolved at run time.
        self.model: Any = load_causal_lm(model_path, dtype=dtype).to(self.device)
        self.pad_id = int(self.tokenizer.pad_token_id)
        self.eos_id = int(self.tokenizer.eos_token_id)
        self._lora: dict[str, Any] | None = None  # adapter layout when wrapped by peft
        if isinstance(turn_cache_mb, bool) or not isinstance(turn_cache_mb, int) \
                or turn_cache_mb < 0:
            raise ValueError(f"rollout.engine_kwargs.turn_cache_mb must be a whole number of "
                             f"MiB >= 0 (0 turns the turn KV cache off), got {turn_cache_mb!r}")
        self.turn_cache = TurnCache(turn_cache_mb << 20)

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
        keep_kv: bool = False,
    ) -> list[Completion]:
        """Sample ``n`` completions per prompt (see ``RolloutEngine.generate``).

        ``temperature == 0`` means greedy decoding. With a ``seed`` the torch RNG is forked and
        seeded, so the same call returns the same tokens and the process RNG is untouched.
        ``keep_kv``: keep every returned row's KV (prompt + response) for a later call whose
        prompts extend them (the next turn of an episode); prompts that extend a kept row
        always reuse it, whatever ``keep_kv`` says for this call.
        """
        check_sampling_args(prompt_ids, n=n, temperature=temperature, top_p=top_p,
                            max_new_tokens=max_new_tokens)
        stop_ids = {self.eos_id, *map(int, stop_token_ids)}
        prompts_per_call = max(1, self.max_batch_size // n)
        devices = [self.device] if self.device.type == "cuda" else []
        completions: list[Completion] = []
        with torch.random.fork_rng(devices=devices):
            if seed is not None:
                torch.manual_seed(seed)
            for start in range(0, len(prompt_ids), prompts_per_call):
                chunk = prompt_ids[start : start + prompts_per_call]
                completions += self._generate_chunk(
                    chunk, start, n=n, temperature=temperature, top_p=top_p,
                    max_new_tokens=max_new_tokens, stop_ids=stop_ids, keep_kv=keep_kv,
                )
        return completions

    def _generation_config(self, *, n: int, temperature: float, top_p: float,
                           max_new_tokens: int, stop_ids: set[int]) -> Any:
        from transformers import GenerationConfig

        # An explicit config, so nothing is inherited from the checkpoint's generation_config
        # (e.g. a default top_k=50 or a repetition penalty would change the distribution).
        sample = temperature > 0
        return GenerationConfig(
            do_sample=sample, temperature=temperature if sample else None,
            top_p=top_p if sample else None, top_k=0, max_new_tokens=max_new_tokens,
            num_return_sequences=n, eos_token_id=sorted(stop_ids), pad_token_id=self.pad_id,
            output_logits=True, output_scores=True, return_dict_in_generate=True,
        )

    @torch.no_grad()
    def _generate_chunk(self, chunk: list[list[int]], first_index: int, *, n: int,
                        temperature: float, top_p: float, max_new_tokens: int,
                        stop_ids: set[int], keep_kv: bool = False) -> list[Completion]:
        # transformers refuses num_return_sequences > 1 without sampling: greedy decoding
        # repeats each prompt row n times instead (rows stay grouped by prompt either way).
        copies = n if temperature <= 0 else 1
        input_ids, attention_mask = self._left_pad([r for r in chunk for _ in range(copies)])
        config = self._generation_config(n=n // copies, temperature=temperature, top_p=top_p,
                                         max_new_tokens=max_new_tokens, stop_ids=stop_ids)
        extra: dict[str, Any] = {}
        reuse = self.turn_cache.max_bytes > 0 and (keep_kv or len(self.turn_cache) > 0)
        if (reuse or self.share_prefill and n > 1) and min(len(r) for r in chunk) > 1:
            input_ids, attention_mask, extra = self._prefill(chunk, n)
            config.num_return_sequences = 1
        out = self.model.generate(input_ids=input_ids, attention_mask=attention_mask,
                                  generation_config=config, **extra)
        new_tokens = out.sequences[:, input_ids.shape[1]:]  # (rows, steps)
        step_logits = out.logits if self.logprobs_mode == "raw" else out.scores
        logprobs = torch.stack(
            [torch.log_softmax(step.float(), dim=-1).gather(-1, new_tokens[:, t : t + 1])[:, 0]
             for t, step in enumerate(step_logits)], dim=1,
        )  # (rows, steps)
        completions = []
        for row in range(new_tokens.shape[0]):
            prompt_index = first_index + row // n
            response, finish = trim_at_stop(new_tokens[row].tolist(), stop_ids)
            completions.append(Completion(
                prompt_index=prompt_index,
                prompt_ids=list(chunk[row // n]),
                response_ids=response,
                text=self.tokenizer.decode(response, skip_special_tokens=True),
                logprobs=logprobs[row, : len(response)].tolist(),
                finish_reason=finish,
            ))
        if keep_kv and self.turn_cache.max_bytes > 0:
            self._keep_rows(out.past_key_values, attention_mask, completions)
        return completions

    def _prefill(self, chunk: list[list[int]], n: int) -> tuple[Any, Any, dict]:
        """Prefill each prompt but its last token once, then give every one of its ``n`` rows
        a copy of that KV cache; ``generate`` then only runs the last prompt token and the
        decode steps. A prompt that extends a row kept in the turn cache starts from that
        row's KV and prefills only the tokens after it. Returns (input_ids, attention_mask,
        generate kwargs), rows grouped by prompt like ``num_return_sequences`` would.

        Layout per row: [kept KV, right-aligned in ``width_c`` columns][new tokens but the
        last, right-aligned in ``width_m`` columns][last prompt token]; the mask hides the
        gaps and positions count real tokens only, so each token sits at its true position.
        """
        entries: list[TurnEntry | None] = [self.turn_cache.take(p) for p in chunk]
        cached = [len(e.ids) if e is not None else 0 for e in entries]
        width_c = max(cached)
        missing = [p[c:-1] for p, c in zip(chunk, cached, strict=True)]
        width_m = max(len(m) for m in missing)
        rows = len(chunk)
        mask = torch.zeros((rows, width_c + width_m + 1), dtype=torch.long)
        ids = torch.full((rows, width_c + width_m + 1), self.pad_id, dtype=torch.long)
        for i, (p, c, m) in enumerate(zip(chunk, cached, missing, strict=True)):
            mask[i, width_c - c: width_c] = 1
            mask[i, width_c + width_m - len(m): width_c + width_m] = 1
            mask[i, -1] = 1
            ids[i, width_c + width_m - len(m): width_c + width_m] = torch.tensor(m,
                                                                                 dtype=torch.long)
            ids[i, -1] = p[-1]
        ids, mask = ids.to(self.device), mask.to(self.device)
        first = next((e for e in entries if e is not None), None)
        cache = (left_padded_cache(entries, width_c, first.layers) if first is not None
                 else None)
        if width_m:
            positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
            out = self.model(input_ids=ids[:, width_c:-1], attention_mask=mask[:, :-1],
                             position_ids=positions[:, width_c:-1], past_key_values=cache,
                             use_cache=True, logits_to_keep=1)
            cache = out.past_key_values
        if cache is None:  # every prompt is one token (callers exclude it)
            raise ValueError("_prefill needs prompts of at least 2 tokens")
        if n > 1:
            cache.batch_repeat_interleave(n)  # type: ignore[attr-defined]
        return (ids.repeat_interleave(n, dim=0), mask.repeat_interleave(n, dim=0),
                {"past_key_values": cache})

    def _keep_rows(self, cache: Any, attention_mask: torch.Tensor,
                   completions: list[Completion]) -> None:
        """Put each row's KV (prompt and response but its last token) in the turn cache."""
        width = attention_mask.shape[1]
        steps = max(len(c.response_ids) for c in completions)
        if (attention_mask.shape[0] != len(completions) or not is_plain_dynamic(cache)
                or cache.get_seq_length() < width + steps - 1):
            return  # rows expanded inside generate, or a cache kind that cannot be cut
        for row, completion in enumerate(completions):
            generated = len(completion.response_ids) - 1
            columns = torch.cat([attention_mask[row].nonzero()[:, 0],
                                 torch.arange(width, width + generated,
                                              device=attention_mask.device)])
            self.turn_cache.put(list(completion.prompt_ids) + completion.response_ids[:-1],
                                row_layers(cache, row, columns))

    def drop_kv(self) -> None:
        """Forget every row kept with ``keep_kv`` (the episodes that would extend them ended)."""
        self.turn_cache.clear()

    def _left_pad(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r):] = 1
        return ids.to(self.device), mask.to(self.device)

    # ------------------------------------------------------------------ scoring
    @torch.no_grad()
    def score_logprobs(
        self, prompt_ids: list[list[int]], response_ids: list[list[int]]
    ) -> list[list[float]]:
        """Teacher-forced raw log-probs of ``response_ids[i]`` after ``prompt_ids[i]``.

        Rows are right-padded (so default position ids are correct) and run in batches of
        ``max_batch_size``.
        """
        from rlsys.algo.logprobs import token_logprobs

        if len(prompt_ids) != len(response_ids):
            raise ValueError(f"prompt_ids ({len(prompt_ids)}) and response_ids "
                             f"({len(response_ids)}) must have the same length")
        result: list[list[float]] = []
        step = self.max_batch_size
        for start in range(0, len(prompt_ids), step):
            prompts = prompt_ids[start : start + step]
            rows = [list(p) + list(r)
                    for p, r in zip(prompts, response_ids[start : start + step], strict=True)]
            width = max(len(r) for r in rows)
            ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for i, r in enumerate(rows):
                ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
                mask[i, : len(r)] = 1
            ids, mask = ids.to(self.device), mask.to(self.device)
            logprobs = token_logprobs(self.model(input_ids=ids, attention_mask=mask).logits, ids)
            result += [logprobs[i, len(p) : len(rows[i])].tolist() for i, p in enumerate(prompts)]
        return result

    # ------------------------------------------------------------------ weights
    @torch.no_grad()
    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy tensors into the model's parameters/buffers by Hugging Face name, in place.

        Unknown names raise ``KeyError``; shape mismatches raise ``ValueError``. Names absent
        from ``named_tensors`` keep their values (partial updates are allowed). Adapter layers
        of an earlier ``load_adapter`` are removed first (the new weights replace them).
        """
        self.turn_cache.clear()  # KV computed by the old weights
        if self._lora is not None:
            self.model, self._lora = self.model.unload(), None
        state = self.model.state_dict()
        for name, tensor in named_tensors:
            if name not in state:
                raise KeyError(f"load_weights: {name!r} is not a parameter of {self.model_path}")
            target = state[name]
            if tuple(target.shape) != tuple(tensor.shape):
                raise ValueError(f"load_weights: {name!r} has shape {tuple(tensor.shape)}, "
                                 f"model expects {tuple(target.shape)}")
            target.copy_(tensor)

    @torch.no_grad()
    def load_adapter(self, named_tensors: Iterable[tuple[str, torch.Tensor]],
                     lora: dict[str, Any]) -> None:
        """Apply a LoRA adapter in place: ``named_tensors`` as in ``adapter_model.safetensors``,
        ``lora`` the layout ``{r, lora_alpha, target_modules, modules_to_save}``. The first
        adapter (or one with a new layout) wraps the model with peft layers; later ones only
        copy their tensors. Raises ``KeyError`` naming tensors the adapter layers lack."""
        from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

        self.turn_cache.clear()  # KV computed by the old adapter
        if self._lora != lora:
            base = self.model.unload() if self._lora is not None else self.model
            config = LoraConfig(r=lora["r"], lora_alpha=lora["lora_alpha"],
                                target_modules=lora["target_modules"],
                                modules_to_save=lora.get("modules_to_save"),
                                lora_dropout=0.0, task_type="CAUSAL_LM")
            self.model, self._lora = get_peft_model(base, config).eval(), dict(lora)
        result = set_peft_model_state_dict(self.model, dict(named_tensors))
        if result.unexpected_keys:
            raise KeyError(f"load_adapter: {self.model_path} has no adapter tensors "
                           f"{sorted(result.unexpected_keys)[:5]}")

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The model's current state dict (shared storage; for tests and checkpoints)."""
        return self.model.state_dict()

    def close(self) -> None:
        """Drop the model so its memory can be reclaimed."""
        self.model = None
        self.turn_cache.clear()
        gc.collect()
