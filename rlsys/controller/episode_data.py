"""Rejection sampling with an environment: keep the episodes it rewards, as SFT conversations.

With a recipe ``env:``, a ``rejection_sampling`` stage runs ``generate.k`` episodes per prompt
record (``RolloutWorker.run_episodes``) instead of single responses. An episode is kept when
the environment's reward is >= ``generate.threshold``, it was not truncated, none of its
assistant turns overlaps the eval set, and its assistant turns are not a repeat of one already
kept for the same prompt. It becomes an SFT record ``{messages, prompt[, answer]}``: the whole
conversation (system and user messages, every assistant turn, every tool observation), which
SFT trains on with the assistant turns as targets. The filter is a pure function; this module
does not train.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rlsys.data.decontam import Decontaminator, normalize_text, text_of
from rlsys.data.sources import chat_message

if TYPE_CHECKING:
    from rlsys.config.schema import GenerateConfig
    from rlsys.controller.context import RunContext
    from rlsys.types import Completion


def accept_episodes(records: Sequence[dict], completions: Sequence[Completion], *,
                    threshold: float, decontam: Decontaminator | None = None,
                    ) -> tuple[list[dict], Counter]:
    """SFT conversations of the episodes worth keeping, and the drops per reason
    (``below_threshold``, ``truncated``, ``contaminated``, ``duplicate``)."""
    kept: list[dict] = []
    dropped: Counter = Counter()
    seen: set[tuple[str, str]] = set()
    for c in completions:
        tr = c.trajectory
        if tr is None:
            raise ValueError("accept_episodes: a completion without a trajectory")
        rec = records[c.prompt_index]
        turns = [m["content"] for m in tr["messages"] if m["role"] == "assistant"]
        key = (normalize_text(text_of(rec["prompt"])), normalize_text("\n".join(turns)))
        if tr["reward"] < threshold:
            dropped["below_threshold"] += 1
        elif tr["truncated"]:
            dropped["truncated"] += 1
        elif decontam is not None and any(decontam.is_contaminated(t) for t in turns):
            dropped["contaminated"] += 1
        elif key in seen:
            dropped["duplicate"] += 1
        else:
            seen.add(key)
            out: dict[str, Any] = {"messages": [chat_message(m) for m in tr["messages"]],
                                   "prompt": rec["prompt"]}
            if "answer" in rec:
                out["answer"] = rec["answer"]
            kept.append(out)
    return kept, dropped


def episode_rejection_sampling(ctx: RunContext, model_path: str, records: list[dict],
                               gen: GenerateConfig, decontam: Decontaminator | None, *,
                               chunk: int) -> tuple[list[dict], int, Counter]:
    """Run ``gen.k`` episodes per record in the recipe's env (``chunk`` prompts per call) and
    filter them; returns the kept SFT records, the number of episodes, and the drops."""
    from rlsys.controller.generation import generate_in_chunks

    env = ctx.recipe.env
    if env is None:
        raise ValueError("episode_rejection_sampling needs a recipe with 'env:'")
    completions = generate_in_chunks(
        ctx.rollout_pool(model_path), records, chunk=chunk, n=gen.k,
        seed=ctx.recipe.seed, temperature=gen.temperature, top_p=1.0, env=env.model_dump())
    kept, dropped = accept_episodes(records, completions, threshold=gen.threshold,
                                    decontam=decontam)
    return kept, len(completions), dropped
