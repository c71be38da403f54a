"""``tool_math`` data: problems for the ``tool_math`` environment, and tool-use demonstrations.

``generate_tool_math(num, seed, split)`` gives RL / eval records ``{prompt, answer}`` (3-4 digit
multiplications and exact divisions, ``rlsys.envs.tool_math.problems``); ``split`` draws from
disjoint seeds so train and eval never share a problem.

``generate_tool_math_demos(num, seed, tool)`` gives SFT records ``{messages}`` made by *playing
the environment*: its real opening messages (system prompt with the tool list), an assistant
turn calling the tool on the problem's expression, the tool's real observation (the calculator,
or the sandboxed python session), and a final assistant turn with the ``\\boxed{}`` answer that
the environment grades as correct (a demonstration the environment would not reward is an
error). Nothing here trains or samples a model.
"""

from __future__ import annotations

import json
import re

from rlsys.envs.tool_math import ToolMathEnv, problems

_SPLIT_SEED = {"train": 0, "eval": 1_000_003}
_EXPR = re.compile(r"What is (\d+) ([*/]) (\d+)\?")


def generate_tool_math(num: int = 64, seed: int = 0, split: str = "train",
                       digits: tuple[int, int] | list[int] = (3, 4)) -> list[dict]:
    """``num`` problems ``{prompt, answer}`` for ``tool_math`` episodes."""
    if split not in _SPLIT_SEED:
        raise ValueError(f"tool_math generator: split must be 'train' or 'eval', got {split!r}")
    if num < 1:
        raise ValueError(f"tool_math generator: num must be >= 1, got {num}")
    lo, hi = digits
    return problems(num, seed=seed + _SPLIT_SEED[split], digits=(int(lo), int(hi)))


def generate_tool_math_demos(num: int = 64, seed: int = 0, tool: str = "calculator",
                             digits: tuple[int, int] | list[int] = (3, 4),
                             tools: tuple[str, ...] | list[str] = ("python", "calculator"),
                             ) -> list[dict]:
    """``num`` SFT conversations solving train-split problems with ``tool`` (``calculator`` or
    ``python``), recorded from real ``tool_math`` episodes; ``tools`` are the tools the
    environment offers (keep them equal to the RL stage's ``env.kwargs.tools``)."""
    if tool not in ("calculator", "python"):
        raise ValueError(f"tool_math_demos: tool must be 'calculator' or 'python', got {tool!r}")
    if tool not in tools:
        raise ValueError(f"tool_math_demos: tool {tool!r} is not among tools {list(tools)}")
    env = ToolMathEnv(tools=tuple(tools))
    out = []
    try:
        for record in generate_tool_math(num, seed=seed + 7, digits=digits):
            match = _EXPR.search(record["prompt"])
            if match is None:
                raise ValueError(f"tool_math_demos: unexpected problem {record['prompt']!r}")
            a, op, b = match.groups()
            expression = f"{a} {op} {b}"
            arguments = {"expression": expression} if tool == "calculator" else \
                {"code": f"print({a} {'//' if op == '/' else '*'} {b})"}
            call = "<tool_call>" + json.dumps({"name": tool, "arguments": arguments}) + \
                "</tool_call>"
            messages = list(env.reset(record))
            first = env.step(call)
            if first.done or not first.observation:
                raise ValueError(f"tool_math_demos: the tool call ended the episode: {first}")
            answer = record["answer"]
            final = f"The result is {answer}. The answer is \\boxed{{{answer}}}."
            last = env.step(final)
            if not (last.done and last.reward == 1.0):
                raise ValueError(f"tool_math_demos: the environment did not accept {final!r}")
            messages += [{"role": "assistant", "content": call}, *first.observation,
                         {"role": "assistant", "content": final}]
            out.append({"messages": [{"role": m["role"], "content": m["content"]}
                                     for m in messages]})
    finally:
        env.close()
    return out
