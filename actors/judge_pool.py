"""The judge worker pool: a judge model on the rollout engines, in its own Ray actors.

``JudgePool`` is a ``RolloutPool`` (plain ``RolloutWorker`` actors, engine ``hf`` or ``vllm``)
serving the judge model instead of the policy: it never receives weight syncs, and
``complete(prompts)`` answers each judge prompt once, greedily (temperature 0, so the same
prompt always gets the same verdict), sharded over the workers. A worker that misses the
deadline is restarted (a stuck one would block the next batch) and ``TimeoutError`` raised;
``JudgeReward`` turns that error into counted per-item reward errors.

``judge_reward`` builds a ``JudgeReward`` on a pool. This module does not parse or cache
answers (``rewards.judge``) and does not decide which candidates to compare (the controller).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ray

from actors.launch import RolloutPool
from rewards.judge import JudgeReward


class JudgePool(RolloutPool):
    """``num`` Ray ``RolloutWorker`` actors holding the judge model.

    Args:
        num: judge workers.
        engine: rollout engine name (``"hf"`` or ``"vllm"``).
        model_path: the judge model's local HF directory.
        max_new_tokens: longest judge answer.
        chat_template: send each judge prompt as a user message through the model's chat
            template (instruct judges); False sends the raw text, for completion-style rubrics
            (e.g. few-shot examples ending in ``Score:``).
        engine_kwargs, system_prompt, num_cpus, timeout_s: as for ``RolloutPool``
            (``timeout_s`` bounds starting a worker and each remote call).
        answer_timeout_s: deadline of one ``complete`` call (default ``timeout_s``).
    """

    name = "judge"

    def __init__(self, num: int, engine: str, model_path: str, *, max_new_tokens: int = 32,
                 chat_template: bool = True, engine_kwargs: dict[str, Any] | None = None,
                 system_prompt: str | None = None, num_cpus: float = 1,
                 timeout_s: float = 300.0, answer_timeout_s: float | None = None) -> None:
        if max_new_tokens < 1:
            raise ValueError(f"judge: max_new_tokens must be >= 1, got {max_new_tokens}")
        self.max_new_tokens = max_new_tokens
        self.answer_timeout_s = timeout_s if answer_timeout_s is None else answer_timeout_s
        super().__init__(num, engine, model_path, engine_kwargs=engine_kwargs,
                         chat_template=chat_template, system_prompt=system_prompt,
                         num_cpus=num_cpus, timeout_s=timeout_s)

    def complete(self, prompts: Sequence[str]) -> list[str]:
        """The judge's greedy answer to each prompt, in order.

        Raises ``TimeoutError`` when a shard is not done within ``answer_timeout_s`` (the late
        workers are restarted first) and ``WorkerError`` when a worker fails.
        """
        sampling = dict(n=1, temperature=0.0, top_p=1.0, max_new_tokens=self.max_new_tokens)
        shards = self.generate_async(list(prompts), **sampling)
        ready, _ = ray.wait([s.ref for s in shards], num_returns=len(shards),
                            timeout=self.answer_timeout_s)
        late = [s.worker for s in shards if s.ref not in ready]
        for worker in late:
            self.restart(worker)  # still busy with the abandoned shard
        if late:
            raise TimeoutError(f"judge workers {late} did not answer {len(prompts)} prompts "
                               f"within {self.answer_timeout_s:g} s")
        return [c.text for s in shards for c in self.wait_shard(s, **sampling)]


def launch_judge_workers(num: int, engine: str, model_path: str, **kwargs: Any) -> JudgePool:
    """Start ``num`` judge actors (Ray must be initialised); ``kwargs`` go to ``JudgePool``."""
    return JudgePool(num, engine, model_path, **kwargs)


def judge_reward(pool: JudgePool, **judge_kwargs: Any) -> JudgeReward:
    """A ``JudgeReward`` asking ``pool``; ``judge_kwargs`` (mode, rubric, min_score, max_score,
    batch_size, cache_size) go to ``JudgeReward``.

    The pool enforces ``answer_timeout_s`` per call; the reward's own deadline adds
    ``timeout_s``, a backstop that leaves room for the pool to restart a late or dead worker.
    """
    return JudgeReward(pool.complete, timeout_s=pool.answer_timeout_s + pool.timeout_s,
                       **judge_kwargs)
