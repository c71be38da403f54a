"""Rank synthetic candidates with an LLM judge (RLAIF) for the ``preference_pairs`` stage.

``judge_samples`` starts a judge worker pool from a stage's ``generate.judge`` config (the config
stops here: the pool and the reward get plain arguments), ranks every prompt's candidates in
shared batches, and stops the pool again, so the judge holds no CPU or GPU after the stage. It
does not generate the candidates or pick the pairs (``rlsys.controller.synthetic``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def judge_samples(records: Sequence[dict], texts: Sequence[tuple[int, str]],
                  judge: Any) -> tuple[list[tuple[int, str, Any]], dict[str, Any]]:
    """``(prompt_index, text, Score)`` for every candidate, ranked by the judge, plus the stats
    entry ``{"judge": {mode, model, requests, cache_hits, judged, parse_errors, ...}}``.

    Args:
        records: the prompt records; a record's ``answer`` is the rubric's ``reference``.
        texts: ``(prompt_index, response_text)`` candidates, grouped by prompt.
        judge: the stage's ``JudgeConfig``.
    """
    from actors.judge_pool import judge_reward, launch_judge_workers
    from rlsys.modeling import resolve_model

    groups: dict[int, list[str]] = {}
    for index, text in texts:
        groups.setdefault(index, []).append(text)
    engine_kwargs = dict(judge.engine_kwargs)
    if judge.engine == "hf":  # CPU: a torch thread per reserved CPU
        engine_kwargs.setdefault("num_threads", max(1, int(judge.num_cpus_per_worker)))
    pool = launch_judge_workers(judge.num_workers, judge.engine, resolve_model(judge.model),
                                max_new_tokens=judge.max_new_tokens,
                                chat_template=judge.chat_template, engine_kwargs=engine_kwargs,
                                system_prompt=judge.system_prompt,
                                num_cpus=judge.num_cpus_per_worker, timeout_s=judge.timeout_s)
    try:
        reward = judge_reward(pool, mode=judge.mode, rubric=judge.rubric,
                              min_score=judge.min_score, max_score=judge.max_score,
                              batch_size=judge.batch_size, cache_size=judge.cache_size)
        ranked = reward.rank([(records[i]["prompt"], group, records[i].get("answer"))
                              for i, group in groups.items()])
    finally:
        pool.close()
    samples = [(i, text, score)
               for (i, group), scores in zip(groups.items(), ranked, strict=True)
               for text, score in zip(group, scores, strict=True)]
    return samples, {"judge": {"mode": judge.mode, "model": judge.model, **dict(reward.stats)}}
