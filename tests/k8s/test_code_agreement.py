"""The manifests agree with the code they deploy: the reward service's port and env names, the
/healthz probe (answered without a token by the real app), the recipe the RayJob runs (validated
by the real CLI with the entrypoint's own flags), the recipe copy, the Ray version, and the
capabilities the code sandbox needs.

Runs the real FastAPI app in-process (TestClient), the real ``rlsys`` CLI and real bubblewrap
sandboxes under ``setpriv``; no cluster.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from rewards.service import ServiceSettings, create_app
from rlsys.cli import main as rlsys_main
from tests.k8s.helpers import (
    OVERLAYS,
    REPO,
    THIRD_PARTY_ENV,
    containers,
    entrypoint_argv,
    find,
    rendered,
)
from tests.k8s.test_manifests import recipe_source

CODE_DIRS = ("rlsys", "rewards", "actors", "learner")


def reward_container(objs: list[dict]) -> dict:
    """The reward-service container of the rendered Deployment."""
    deployment = find(objs, "Deployment", "rlsys-reward-service")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def port_mismatches(objs: list[dict], code_port: int) -> list[str]:
    """Every place where the deployed port disagrees with the service's default ``code_port``."""
    container = reward_container(objs)
    args = container["args"]
    found = {
        "containerPort": container["ports"][0]["containerPort"],
        "--port arg": int(args[args.index("--port") + 1]),
        "Service port": find(objs, "Service", "rlsys-reward-service")["spec"]["ports"][0]["port"],
    }
    for probe in ("readinessProbe", "livenessProbe"):
        port = container[probe]["httpGet"]["port"]
        found[probe] = port if isinstance(port, int) else {
            p["name"]: p["containerPort"] for p in container["ports"]}[port]
    return [f"{where}={port} (code: {code_port})" for where, port in found.items()
            if port != code_port]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_reward_service_port_is_the_code_default(overlay: str) -> None:
    code_port = ServiceSettings.model_fields["port"].default
    assert port_mismatches(rendered(overlay), code_port) == []
    assert port_mismatches(rendered(overlay), code_port + 1) != []


def test_reward_service_runs_the_serve_command_on_all_interfaces() -> None:
    args = reward_container(rendered("gpu"))["args"]
    assert args[0] == "serve"
    assert args[args.index("--host") + 1] == "0.0.0.0", "127.0.0.1 is unreachable from a Service"


def env_names_unread_by_code(names: set[str]) -> set[str]:
    """Names neither read by rlsys sources (as a string literal) nor known third-party ones."""
    sources = "\n".join(p.read_text() for d in CODE_DIRS for p in (REPO / d).rglob("*.py"))
    literals = set(re.findall(r"""["']([A-Z][A-Z0-9_]+)["']""", sources))
    return {n for n in names if n not in literals and n not in THIRD_PARTY_ENV}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_env_names_in_manifests_are_read_by_the_code(overlay: str) -> None:
    names = {e["name"] for c in containers(rendered(overlay)) for e in c.get("env", [])}
    assert {"RLSYS_API_TOKEN", "RLSYS_REDIS_URL"} <= names
    assert env_names_unread_by_code(names) == set()
    assert env_names_unread_by_code({"RLSYS_REDIS_URI"}) == {"RLSYS_REDIS_URI"}


def test_probes_hit_healthz_which_answers_without_the_token() -> None:
    container = reward_container(rendered("gpu"))
    paths = {container[p]["httpGet"]["path"] for p in ("readinessProbe", "livenessProbe")}
    assert paths == {"/healthz"}
    # A dead Redis must not fail the probe: /healthz reports it but still answers 200.
    settings = ServiceSettings(token="s3cret", redis_url="redis://127.0.0.1:1/0",
                               redis_timeout_s=0.1)
    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").status_code == 200
        # The token is live (so the 200 above is not auth being off): kubelet sends no header,
        # which is why the probes may not target /metrics or /v1.
        assert client.get("/metrics").status_code == 401
        assert client.get("/v1/rewards").status_code == 401


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_reward_service_settings_limit_rate_and_keep_auth_and_ssrf_guard(
        overlay: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The container's args and plain env values, read by the service's own flag parser, give
    a rate limit, a required token and no plugin-host allow-list."""
    import argparse

    from rewards.service.flags import add_service_arguments, settings_from_args

    container = reward_container(rendered(overlay))
    for name in ("RLSYS_RATE_LIMIT_PER_MIN", "RLSYS_ALLOW_PLUGIN_HOSTS", "RLSYS_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for env in container["env"]:
        if "value" in env:
            monkeypatch.setenv(env["name"], env["value"])
    assert container["args"][0] == "serve"
    parser = argparse.ArgumentParser()
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    add_service_arguments(parser)
    args = parser.parse_args(container["args"][1:])
    settings = settings_from_args(args, host=args.host, port=args.port, token="from-secret")
    assert settings.rate_limit_per_min > 0
    assert not settings.insecure_no_auth and settings.allow_plugin_hosts == ()
    assert "RLSYS_API_TOKEN" in {e["name"] for e in container["env"] if "valueFrom" in e}


def _validate_argv(objs: list[dict], tmp_path: Path) -> list[str]:
    """The RayJob entrypoint turned into `rlsys validate` on the ConfigMap's recipe text."""
    job, recipe_path, text = recipe_source(objs)
    local = tmp_path / Path(recipe_path).name
    local.write_text(text)
    argv = entrypoint_argv(job)[1:]
    argv[argv.index("train")] = "validate"
    argv[argv.index(recipe_path)] = str(local)
    return argv


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rayjob_entrypoint_and_recipe_pass_rlsys_validate(overlay: str, tmp_path: Path) -> None:
    assert rlsys_main(_validate_argv(rendered(overlay), tmp_path)) == 0


def test_rlsys_validate_rejects_a_broken_entrypoint(tmp_path: Path) -> None:
    objs = rendered("cpu-dev")
    job = find(objs, "RayJob", "rlsys-train")
    job["spec"]["entrypoint"] = job["spec"]["entrypoint"].replace("logging.run_dir", "run_dir")
    assert rlsys_main(_validate_argv(objs, tmp_path)) == 2


def test_recipe_in_configmap_is_configs_quickstart() -> None:
    copy = (REPO / "k8s/base/recipes/quickstart.yaml").read_text()
    assert copy == (REPO / "configs/quickstart.yaml").read_text(), (
        "k8s/base/recipes/quickstart.yaml is stale: cp configs/quickstart.yaml k8s/base/recipes/")
    _, _, text = recipe_source(rendered("cpu-dev"))
    assert text == copy


def test_ray_version_matches_the_installed_ray() -> None:
    want = ".".join(importlib.metadata.version("ray").split(".")[:2])
    for overlay in OVERLAYS:
        got = find(rendered(overlay), "RayCluster", "rlsys")["spec"]["rayVersion"]
        assert ".".join(got.split(".")[:2]) == want, f"{overlay}: rayVersion {got} vs ray {want}"


SANDBOX_SCRIPT = """
from rewards.code import run_tests
good = run_tests("def add(a, b):\\n    return a + b\\n", "assert add(1, 2) == 3\\n", timeout_s=10)
bad = run_tests("def add(a, b):\\n    return a - b\\n", "assert add(1, 2) == 3\\n", timeout_s=10)
print(good.status, bad.status)
"""


def run_sandbox_with_caps(caps: list[str]) -> subprocess.CompletedProcess:
    """Run two real code-reward sandboxes in a process limited to ``caps`` (setpriv)."""
    bounding = ",".join(["-all"] + [f"+{c.lower()}" for c in caps])
    return subprocess.run(["setpriv", f"--bounding-set={bounding}", "--inh-caps=-all",
                           sys.executable, "-c", SANDBOX_SCRIPT],
                          capture_output=True, text=True, timeout=120, cwd=REPO)


def test_code_sandbox_works_with_exactly_the_pod_capabilities() -> None:
    """The reward-service securityContext grants what rewards.code's sandbox needs, no more:
    with those capabilities a real bubblewrap sandbox passes a good program and fails a bad one;
    without CAP_SYS_ADMIN (or CAP_KILL) it breaks. Needs root, as the service pod does."""
    assert os.geteuid() == 0, "run as root: the reward-service pod runs the sandbox as root"
    container = reward_container(rendered("gpu"))
    caps = container["securityContext"]["capabilities"]
    assert caps["drop"] == ["ALL"]
    assert container["securityContext"]["seccompProfile"]["type"] == "Unconfined"
    done = run_sandbox_with_caps(caps["add"])
    assert done.stdout.split() == ["passed", "failed"], done.stderr[-2000:]
    for missing in ("SYS_ADMIN", "KILL"):
        done = run_sandbox_with_caps([c for c in caps["add"] if c != missing])
        assert done.stdout.split() != ["passed", "failed"], missing
