"""Built-in generated tasks (data sources with ``generator:`` in a recipe)."""

from rlsys.registry import Registry
from rlsys.tasks.arithmetic import generate_arithmetic

#: generator name -> fn(**kwargs) -> list[dict] records with canonical keys
GENERATORS: Registry = Registry("data generator")
GENERATORS.register("arithmetic", generate_arithmetic)

__all__ = ["GENERATORS", "generate_arithmetic"]
