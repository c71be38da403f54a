"""The LLM-judge reward (RLAIF): Jinja rubrics, answer parsing, and ``JudgeReward``.

Importable without torch, Ray or jinja2 (jinja2 loads when a rubric is built). The judge model
itself runs elsewhere (``actors.judge_pool``); this package only talks to it through a
``generate(prompts) -> answers`` callable.
"""

from rewards.judge.parse import JudgeParseError, parse_score, parse_verdict
from rewards.judge.reward import JudgeReward
from rewards.judge.rubric import Rubric

__all__ = ["JudgeParseError", "JudgeReward", "Rubric", "parse_score", "parse_verdict"]
