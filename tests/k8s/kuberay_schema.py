"""JSON schemas of the KubeRay ``ray.io/v1`` RayCluster and RayJob fields the manifests rely on.

Hand-written from the KubeRay v1 CRD field names (KubeRay >= 1.2), not a copy of the CRD: every
level the manifests control has ``additionalProperties: false``, so a misspelt field (say
``maxReplica`` or ``shutdownAfterJobFinish``) fails validation instead of being silently dropped
by the API server. Pod templates are left open here; the tests validate them separately against
the Kubernetes ``PodTemplateSpec`` schema. Cross-field rules (``minReplicas <= replicas <=
maxReplicas``) are checked in Python by ``check_ray_object``.
"""

from __future__ import annotations

from typing import Any

import jsonschema

_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_COUNT = {"type": "integer", "minimum": 0}
_POD_TEMPLATE = {"type": "object", "required": ["spec"]}

_AUTOSCALER_OPTIONS = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "upscalingMode": {"enum": ["Default", "Aggressive", "Conservative"]},
        "idleTimeoutSeconds": _COUNT,
        "image": {"type": "string"},
        "imagePullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
        "resources": {"type": "object"},
        "env": {"type": "array"},
        "version": {"enum": ["v1", "v2"]},
    },
}

_HEAD_GROUP = {
    "type": "object",
    "additionalProperties": False,
    "required": ["rayStartParams", "template"],
    "properties": {
        "serviceType": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
        "rayStartParams": _STRING_MAP,
        "template": _POD_TEMPLATE,
        "enableIngress": {"type": "boolean"},
        "headService": {"type": "object"},
    },
}

_WORKER_GROUP = {
    "type": "object",
    "additionalProperties": False,
    "required": ["groupName", "rayStartParams", "template", "minReplicas", "maxReplicas"],
    "properties": {
        "groupName": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "replicas": _COUNT,
        "minReplicas": _COUNT,
        "maxReplicas": _COUNT,
        "idleTimeoutSeconds": _COUNT,
        "numOfHosts": {"type": "integer", "minimum": 1},
        "suspend": {"type": "boolean"},
        "rayStartParams": _STRING_MAP,
        "template": _POD_TEMPLATE,
        "scaleStrategy": {"type": "object"},
    },
}

RAY_CLUSTER_SPEC: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["headGroupSpec"],
    "properties": {
        "rayVersion": {"type": "string", "pattern": r"^\d+\.\d+\.\d+$"},
        "enableInTreeAutoscaling": {"type": "boolean"},
        "autoscalerOptions": _AUTOSCALER_OPTIONS,
        "headGroupSpec": _HEAD_GROUP,
        "workerGroupSpecs": {"type": "array", "items": _WORKER_GROUP},
        "suspend": {"type": "boolean"},
    },
}

_METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}},
}

RAY_CLUSTER: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "ray.io/v1"},
        "kind": {"const": "RayCluster"},
        "metadata": _METADATA,
        "spec": RAY_CLUSTER_SPEC,
    },
}

RAY_JOB: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "ray.io/v1"},
        "kind": {"const": "RayJob"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["entrypoint"],
            # Exactly one way to get a cluster: an existing one or one of its own.
            "oneOf": [{"required": ["clusterSelector"]}, {"required": ["rayClusterSpec"]}],
            "properties": {
                "entrypoint": {"type": "string", "minLength": 1},
                "clusterSelector": {**_STRING_MAP, "required": ["ray.io/cluster"]},
                "rayClusterSpec": RAY_CLUSTER_SPEC,
                "shutdownAfterJobFinishes": {"type": "boolean"},
                "ttlSecondsAfterFinished": _COUNT,
                "activeDeadlineSeconds": {"type": "integer", "minimum": 1},
                "backoffLimit": _COUNT,
                "submissionMode": {"enum": ["K8sJobMode", "HTTPMode", "InteractiveMode",
                                            "SidecarMode"]},
                "submitterPodTemplate": _POD_TEMPLATE,
                "runtimeEnvYAML": {"type": "string"},
                "entrypointNumCpus": {"type": "number", "minimum": 0},
                "entrypointNumGpus": {"type": "number", "minimum": 0},
                "jobId": {"type": "string"},
                "suspend": {"type": "boolean"},
            },
        },
    },
}

SCHEMAS = {"RayCluster": RAY_CLUSTER, "RayJob": RAY_JOB}


def _check_groups(name: str, spec: dict[str, Any]) -> None:
    for group in spec.get("workerGroupSpecs", []):
        lo, hi = group["minReplicas"], group["maxReplicas"]
        replicas = group.get("replicas", lo)
        if not lo <= replicas <= hi:
            raise ValueError(f"RayCluster {name}: worker group {group['groupName']!r} needs "
                             f"minReplicas <= replicas <= maxReplicas, got {lo}, {replicas}, {hi}")
    names = [g["groupName"] for g in spec.get("workerGroupSpecs", [])]
    if len(set(names)) != len(names):
        raise ValueError(f"RayCluster {name}: duplicate worker group names {names}")


def check_ray_object(obj: dict[str, Any]) -> None:
    """Validate a RayCluster or RayJob; raises ``jsonschema.ValidationError`` or ``ValueError``."""
    kind = obj.get("kind")
    if kind not in SCHEMAS:
        raise ValueError(f"not a KubeRay kind this schema covers: {kind!r}")
    jsonschema.validate(obj, SCHEMAS[kind])
    name = obj["metadata"]["name"]
    spec = obj["spec"] if kind == "RayCluster" else obj["spec"].get("rayClusterSpec", {})
    _check_groups(name, spec)


def pod_templates(obj: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(label, pod template) of every pod a RayCluster or RayJob object describes."""
    spec = obj["spec"]
    out = []
    if obj["kind"] == "RayJob":
        if "submitterPodTemplate" in spec:
            out.append(("submitter", spec["submitterPodTemplate"]))
        spec = spec.get("rayClusterSpec")
        if spec is None:
            return out
    out.append(("head", spec["headGroupSpec"]["template"]))
    out += [(f"worker/{g['groupName']}", g["template"]) for g in spec.get("workerGroupSpecs", [])]
    return out
