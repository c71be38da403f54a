"""Built-in generated tasks (data sources with ``generator:`` in a recipe)."""

from rlsys.registry import Registry
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

__all__ = ["GENERATORS", "generate_arithmetic", "generate_arithmetic_pairs",
           "generate_arithmetic_text"]
