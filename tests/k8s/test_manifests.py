"""Static checks of the rendered Kubernetes overlays (``k8s/overlays/*``).

Every core object is validated against the Kubernetes OpenAPI schemas shipped offline by
``kubernetes-validate`` (strict: unknown fields fail), every RayCluster/RayJob against
``kuberay_schema`` plus their pod templates against ``PodTemplateSpec``, and the manifests are
cross-checked against each other (names, selectors, mounts, Secrets) and against the code
(ports, env names, the CLI the RayJob runs, /healthz). No cluster is contacted.
Each check has a negative twin that breaks a copy and expects the check to fail.
"""

from __future__ import annotations

import jsonschema
import kubernetes_validate
import pytest

from tests.k8s.helpers import (
    EXTERNAL_SECRETS,
    K8S_VERSIONS,
    OVERLAYS,
    containers,
    deep_copy,
    entrypoint_argv,
    find,
    rendered,
)
from tests.k8s.kuberay_schema import check_ray_object, pod_templates

RAY_KINDS = {"RayCluster", "RayJob"}


def validate_core(obj: dict, version: str) -> None:
    """Validate a core-kind object against the strict Kubernetes schema of ``version``."""
    kubernetes_validate.validate(obj, version, strict=True)


def validate_ray(obj: dict, version: str) -> None:
    """KubeRay schema for the object, Kubernetes PodTemplateSpec for each of its pods."""
    check_ray_object(obj)
    for label, template in pod_templates(obj):
        wrapper = {"apiVersion": "v1", "kind": "PodTemplate",
                   "metadata": {"name": f"{obj['metadata']['name']}-{label}".replace("/", "-")},
                   "template": template}
        validate_core(wrapper, version)


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates(overlay: str, version: str) -> None:
    objs = rendered(overlay)
    kinds = {o["kind"] for o in objs}
    assert {"RayCluster", "RayJob", "Deployment", "Service", "HorizontalPodAutoscaler",
            "StatefulSet", "ConfigMap", "Secret"} <= kinds
    for obj in objs:
        (validate_ray if obj["kind"] in RAY_KINDS else validate_core)(obj, version)


def _typo(obj: dict, path: list[str], bad_key: str) -> dict:
    """A copy of ``obj`` with a misspelt field ``bad_key`` added at ``path``."""
    broken = deep_copy(obj)
    node = broken
    for key in path:
        node = node[int(key)] if isinstance(node, list) else node[key]
    node[bad_key] = 1
    return broken


@pytest.mark.parametrize("kind,name,path,bad", [
    ("Deployment", "rlsys-reward-service", ["spec"], "replica"),
    ("Service", "rlsys-reward-service", ["spec"], "targetport"),
    ("HorizontalPodAutoscaler", "rlsys-reward-service", ["spec"], "maxReplica"),
    ("StatefulSet", "rlsys-redis", ["spec", "template", "spec", "containers", "0"], "imag"),
    ("RayCluster", "rlsys", ["spec", "workerGroupSpecs", "0"], "maxReplica"),
    ("RayCluster", "rlsys", ["spec", "headGroupSpec", "template", "spec", "containers", "0"],
     "resource"),
    ("RayJob", "rlsys-train", ["spec"], "shutdownAfterJobFinish"),
])
def test_validators_reject_a_misspelt_field(kind: str, name: str, path: list, bad: str) -> None:
    obj = find(rendered("gpu"), kind, name)
    validate = validate_ray if kind in RAY_KINDS else validate_core
    validate(obj, K8S_VERSIONS[0])
    with pytest.raises((kubernetes_validate.ValidationError, jsonschema.ValidationError)):
        validate(_typo(obj, path, bad), K8S_VERSIONS[0])


def test_ray_replica_bounds_and_string_start_params_are_enforced() -> None:
    cluster = find(rendered("gpu"), "RayCluster", "rlsys")
    broken = deep_copy(cluster)
    broken["spec"]["workerGroupSpecs"][0]["replicas"] = 99
    with pytest.raises(ValueError, match="minReplicas <= replicas <= maxReplicas"):
        check_ray_object(broken)
    broken = deep_copy(cluster)
    broken["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0  # KubeRay wants strings
    with pytest.raises(jsonschema.ValidationError):
        check_ray_object(broken)


def _gpu_limit(group: dict) -> str | None:
    (container,) = group["template"]["spec"]["containers"]
    limits, requests = container["resources"]["limits"], container["resources"]["requests"]
    if "nvidia.com/gpu" in limits:
        # Extended resources cannot be overcommitted: Kubernetes requires requests == limits.
        assert requests.get("nvidia.com/gpu", limits["nvidia.com/gpu"]) == limits["nvidia.com/gpu"]
    return limits.get("nvidia.com/gpu")


def test_gpu_overlay_has_a_running_gpu_group_and_cpu_dev_has_none() -> None:
    gpu = find(rendered("gpu"), "RayCluster", "rlsys")["spec"]["workerGroupSpecs"]
    assert [g["groupName"] for g in gpu] == ["cpu", "gpu", "rollout", "learner", "reward"], \
        "JSON patches address groups by index"
    assert _gpu_limit(gpu[0]) is None and _gpu_limit(gpu[1]) == "1"
    assert gpu[1]["maxReplicas"] >= gpu[1]["replicas"] >= 1
    # the role groups (cluster.placement): GPU rollout and learner pods, a CPU reward pod
    assert [_gpu_limit(g) for g in gpu[2:]] == ["1", "1", None]
    dev = find(rendered("cpu-dev"), "RayCluster", "rlsys")["spec"]["workerGroupSpecs"]
    assert [g["groupName"] for g in dev] == ["cpu", "rollout", "learner", "reward"]
    assert not any("nvidia.com/gpu" in str(c.get("resources")) for c in containers(dev))


def _head_mounts(cluster: dict) -> dict[str, dict]:
    """mountPath -> volume of the head container."""
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]
    volumes = {v["name"]: v for v in head.get("volumes", [])}
    (container,) = head["containers"]
    return {m["mountPath"]: volumes[m["name"]] for m in container.get("volumeMounts", [])}


def recipe_source(objs: list[dict]) -> tuple[dict, str, str]:
    """(RayJob, recipe path in its entrypoint, recipe text the head pod sees at that path)."""
    (job,) = [o for o in objs if o["kind"] == "RayJob"]
    argv = entrypoint_argv(job)
    assert argv[:2] == ["rlsys", "train"], f"RayJob entrypoint must run `rlsys train`: {argv}"
    recipe_path = argv[2]
    cluster_name = job["spec"]["clusterSelector"]["ray.io/cluster"]
    cluster = find(objs, "RayCluster", cluster_name)
    assert cluster["metadata"].get("namespace") == job["metadata"].get("namespace")
    directory, _, key = recipe_path.rpartition("/")
    mounts = _head_mounts(cluster)
    assert directory in mounts, f"{recipe_path}: {directory} is not mounted in the head pod"
    configmap = find(objs, "ConfigMap", mounts[directory]["configMap"]["name"])
    assert key in configmap["data"], f"ConfigMap has no key {key!r} for {recipe_path}"
    return job, recipe_path, configmap["data"][key]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rayjob_runs_the_configmap_recipe_on_the_selected_cluster(overlay: str) -> None:
    job, _, text = recipe_source(rendered(overlay))
    # KubeRay ignores shutdownAfterJobFinishes for a selected (not owned) cluster: keep it honest.
    assert job["spec"]["shutdownAfterJobFinishes"] is False
    assert "name:" in text


@pytest.mark.parametrize("break_it", ["entrypoint", "selector", "mount", "key"])
def test_recipe_source_check_catches_broken_wiring(break_it: str) -> None:
    objs = rendered("cpu-dev")
    job = find(objs, "RayJob", "rlsys-train")
    cluster = find(objs, "RayCluster", "rlsys")
    if break_it == "entrypoint":
        job["spec"]["entrypoint"] = "python -m rlsys.cli train /recipes/recipe.yaml"
    elif break_it == "selector":
        job["spec"]["clusterSelector"]["ray.io/cluster"] = "prefix-rlsys"
    elif break_it == "mount":
        head = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
        head["volumeMounts"] = [m for m in head["volumeMounts"] if m["mountPath"] != "/recipes"]
    else:
        job["spec"]["entrypoint"] = "rlsys train /recipes/quickstart.yaml"
    with pytest.raises(AssertionError):
        recipe_source(objs)


def secret_refs(obj: dict) -> set[str]:
    """Names of Secrets an object's containers read through env valueFrom/envFrom."""
    names = set()
    for container in containers(obj):
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                names.add(ref["name"])
        names |= {e["secretRef"]["name"] for e in container.get("envFrom", []) if "secretRef" in e}
    return names


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_referenced_secrets_and_configmaps_exist_or_are_documented_external(overlay: str) -> None:
    objs = rendered(overlay)
    secrets = {o["metadata"]["name"] for o in objs if o["kind"] == "Secret"}
    wanted = set().union(*(secret_refs(o) for o in objs))
    assert wanted - secrets == EXTERNAL_SECRETS[overlay]
    configmaps = {o["metadata"]["name"] for o in objs if o["kind"] == "ConfigMap"}
    for obj in objs:
        for volume in _volumes(obj):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in configmaps, volume


def _volumes(node) -> list[dict]:
    if isinstance(node, dict):
        own = node.get("volumes", []) if isinstance(node.get("volumes"), list) else []
        return own + [v for value in node.values() for v in _volumes(value)]
    if isinstance(node, list):
        return [v for item in node for v in _volumes(item)]
    return []


def test_secret_check_sees_a_misnamed_secret() -> None:
    objs = rendered("cpu-dev")
    deployment = find(objs, "Deployment", "rlsys-reward-service")
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    env[0]["valueFrom"]["secretKeyRef"]["name"] = "rlsys-reward-authh"
    secrets = {o["metadata"]["name"] for o in objs if o["kind"] == "Secret"}
    assert secret_refs(deployment) - secrets == {"rlsys-reward-authh"}


def selects(selector: dict, labels: dict) -> bool:
    """Whether a Service selector / matchLabels map selects pods with ``labels``."""
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_selectors_services_and_hpa_point_at_their_workloads(overlay: str) -> None:
    objs = rendered(overlay)
    for name in ("rlsys-reward-service", "rlsys-redis"):
        kind = "Deployment" if name == "rlsys-reward-service" else "StatefulSet"
        workload, service = find(objs, kind, name), find(objs, "Service", name)
        pod_labels = workload["spec"]["template"]["metadata"]["labels"]
        assert selects(workload["spec"]["selector"]["matchLabels"], pod_labels)
        assert selects(service["spec"]["selector"], pod_labels)
        ports = {p["name"]: p["containerPort"]
                 for c in workload["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, f"Service {name}: unknown {port['targetPort']}"
            assert port["port"] == ports[port["targetPort"]]
    assert not selects({"app.kubernetes.io/component": "redis"},
                       find(objs, "Deployment", "rlsys-reward-service")
                       ["spec"]["template"]["metadata"]["labels"])
    hpa = find(objs, "HorizontalPodAutoscaler", "rlsys-reward-service")
    target = hpa["spec"]["scaleTargetRef"]
    assert find(objs, target["kind"], target["name"])["apiVersion"] == target["apiVersion"]
    assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_statefulset_service_name_is_its_headless_service() -> None:
    objs = rendered("gpu")
    sts = find(objs, "StatefulSet", "rlsys-redis")
    assert find(objs, "Service", sts["spec"]["serviceName"])["spec"]["clusterIP"] == "None"
    url = find(objs, "Secret", "rlsys-redis")["stringData"]["url"]
    pod_dns = f"{sts['metadata']['name']}-0.{sts['spec']['serviceName']}:6379"
    assert pod_dns in url, f"in-cluster Redis URL {url!r} must address {pod_dns}"
