"""Built-in generated tasks (data sources with ``generator:`` in a recipe)."""

from rlsys.registry import Registry, lazy_factory
from rlsys.tasks.arithmetic import (
    generate_arithmetic,
    generate_arithmetic_pairs,
    generate_arithmetic_text,
)

#: generator name -> fn(**kwargs) -> list[dict] records with canonical keys
GENERATORS: Registry = Registry("data generator")
GENERATORS.register("arithmetic", generate_arithmetic)
GENERATORS.register("arithmetic_text", generate_arithmetic_text)
GENERATORS.register("arithmetic_pairs", generate_arithmetic_pairs)
# tool-use problems and demonstrations (imported on first use: they pull in the environments)
GENERATORS.register("tool_math", lazy_factory("rlsys.tasks.tool_math:generate_tool_math"))
GENERATORS.register("tool_math_demos",
                    lazy_factory("rlsys.tasks.tool_math:generate_tool_math_demos"))

__all__ = ["GENERATORS", "generate_arithmetic", "generate_arithmetic_pairs",
           "generate_arithmetic_text"]
