"""Shared facts and lookups for the Kubernetes tests: paths, rendered overlays, object lookups.

Only reads files (manifests, Dockerfiles, pyproject.toml); renders with ``tests/k8s/render.py``.
"""

from __future__ import annotations

import copy
import functools
import json
import shlex
from pathlib import Path
from typing import Any

import tomllib
import yaml

from tests.k8s.render import render

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
OVERLAYS = ("cpu-dev", "gpu")
# Kubernetes versions whose schemas (shipped by kubernetes-validate) every core object must meet:
# the oldest we support (appArmorProfile in securityContext is GA since 1.30) and a recent one.
K8S_VERSIONS = ("1.30.0", "1.34.0")
# Secrets an overlay references but deliberately does not render: created out of band
# (k8s/README.md gives the command), so no real token is ever committed.
EXTERNAL_SECRETS = {"cpu-dev": set(), "gpu": {"rlsys-reward-auth"}}
# Image name used in k8s/base -> the Dockerfile that builds it.
IMAGE_DOCKERFILES = {"rlsys": REPO / "docker/Dockerfile",
                     "rlsys-reward-service": REPO / "docker/Dockerfile.reward-service"}
# Environment variables read by third-party code, not by rlsys (everything else must be
# read by the rlsys sources).
THIRD_PARTY_ENV = {"VLLM_CPU_KVCACHE_SPACE", "OMP_WAIT_POLICY"}


@functools.cache
def _rendered(overlay: str) -> tuple[str, ...]:
    return tuple(json.dumps(o) for o in render(K8S / "overlays" / overlay))


def rendered(overlay: str) -> list[dict[str, Any]]:
    """The objects of ``k8s/overlays/<overlay>`` (a fresh copy each call, cached render)."""
    return [json.loads(s) for s in _rendered(overlay)]


def find(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The object of ``kind`` named ``name``; AssertionError naming both if absent."""
    hits = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(hits) == 1, f"expected one {kind} {name!r}, found {len(hits)}"
    return hits[0]


def containers(node: Any) -> list[dict[str, Any]]:
    """Every container (and init container) anywhere below ``node``."""
    out: list[dict[str, Any]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                out.extend(value)
            out.extend(containers(value))
    elif isinstance(node, list):
        for item in node:
            out.extend(containers(item))
    return out


def kustomization(overlay: str) -> dict[str, Any]:
    """The parsed ``kustomization.yaml`` of an overlay."""
    return yaml.safe_load((K8S / "overlays" / overlay / "kustomization.yaml").read_text())


def pyproject() -> dict[str, Any]:
    """The parsed ``pyproject.toml``."""
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, argument text) pairs of a Dockerfile, continuation lines joined."""
    lines, current = [], ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        current += " " + stripped[:-1] if stripped.endswith("\\") else " " + stripped
        if not stripped.endswith("\\"):
            lines.append(current.strip())
            current = ""
    out = []
    for line in lines:
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def exec_form(path: Path, instruction: str) -> list[str]:
    """The JSON (exec) form of the last ENTRYPOINT or CMD of a Dockerfile."""
    args = [a for i, a in dockerfile_instructions(path) if i == instruction]
    assert args, f"{path.name}: no {instruction}"
    value = json.loads(args[-1])
    assert isinstance(value, list), f"{path.name}: {instruction} must use the exec (JSON) form"
    return value


def entrypoint_argv(rayjob: dict[str, Any]) -> list[str]:
    """The RayJob entrypoint split like a shell would."""
    return shlex.split(rayjob["spec"]["entrypoint"])


def deep_copy(obj: Any) -> Any:
    """A deep copy (for deliberately broken variants in negative tests)."""
    return copy.deepcopy(obj)
