"""The offline kustomize renderer (``tests/k8s/render.py``) on small hand-made kustomizations.

Expected outputs are what ``kubectl kustomize`` (kustomize v5.5) printed for the same inputs;
unsupported features must raise instead of rendering something kustomize would not.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml

from tests.k8s.render import RenderError, apply_json6902, render, strategic_merge

DEPLOYMENT = {
    "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
    "spec": {"replicas": 2, "template": {"spec": {"containers": [
        {"name": "app", "image": "repo/app:1", "env": [{"name": "A", "value": "1"}]},
        {"name": "side", "image": "side:2"}]}}},
}
RAY = {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "rc"},
       "spec": {"headGroupSpec": {"template": {"spec": {
           "initContainers": [{"name": "init", "image": "app"}],
           "containers": [{"name": "head", "image": "app"}]}}},
           "workerGroupSpecs": [{"groupName": "a", "replicas": 1}]}}


def write(directory: Path, files: dict[str, object]) -> Path:
    """Write YAML files (dicts/lists, or a list of documents under a key ending in '*')."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        if name.endswith("*"):
            (directory / name[:-1]).write_text(yaml.safe_dump_all(content))
        else:
            (directory / name).write_text(content if isinstance(content, str)
                                          else yaml.safe_dump(content))
    return directory


def test_strategic_merge_by_name_and_null_deletes() -> None:
    patch = {"spec": {"replicas": None, "template": {"spec": {"containers": [
        {"name": "app", "env": [{"name": "B", "value": "2"}, {"name": "A", "value": "9"}]}]}}}}
    out = strategic_merge(DEPLOYMENT, patch)
    assert "replicas" not in out["spec"]
    app, side = out["spec"]["template"]["spec"]["containers"]
    assert app["image"] == "repo/app:1" and side == {"name": "side", "image": "side:2"}
    # Kubernetes order: patch elements first (in patch order), then untouched base ones.
    assert app["env"] == [{"name": "B", "value": "2"}, {"name": "A", "value": "9"}]
    out = strategic_merge(DEPLOYMENT, {"spec": {"template": {"spec": {"containers": [
        {"name": "side", "image": "side:3"}]}}}})
    assert [c["name"] for c in out["spec"]["template"]["spec"]["containers"]] == ["side", "app"]
    assert DEPLOYMENT["spec"]["replicas"] == 2, "inputs are not modified"
    with pytest.raises(RenderError, match="'ports'"):
        strategic_merge({"ports": [{"port": 1}]}, {"ports": [{"port": 2}]}, "ports")


def test_json6902_operations() -> None:
    obj = yaml.safe_load(yaml.safe_dump(RAY))
    apply_json6902(obj, [
        {"op": "test", "path": "/spec/workerGroupSpecs/0/groupName", "value": "a"},
        {"op": "add", "path": "/spec/workerGroupSpecs/-", "value": {"groupName": "b"}},
        {"op": "replace", "path": "/spec/workerGroupSpecs/0/replicas", "value": 3},
        {"op": "remove", "path": "/spec/headGroupSpec/template/spec/initContainers"},
    ])
    assert obj["spec"]["workerGroupSpecs"] == [{"groupName": "a", "replicas": 3},
                                               {"groupName": "b"}]
    assert "initContainers" not in obj["spec"]["headGroupSpec"]["template"]["spec"]
    with pytest.raises(RenderError, match="does not exist"):
        apply_json6902(obj, [{"op": "replace", "path": "/spec/workerGroupSpecs/5/replicas",
                              "value": 1}])
    with pytest.raises(RenderError, match="test failed"):
        apply_json6902(obj, [{"op": "test", "path": "/spec/workerGroupSpecs/0/groupName",
                              "value": "z"}])


def test_overlay_namespace_labels_images_generators_and_patches(tmp_path: Path) -> None:
    write(tmp_path / "base", {
        "kustomization.yaml": {"resources": ["all.yaml"],
                               "labels": [{"pairs": {"part-of": "x"}}]},
        "all.yaml*": [DEPLOYMENT, RAY],
    })
    write(tmp_path / "ov", {
        "kustomization.yaml": {
            "namespace": "dev", "resources": ["ns.yaml", "../base"],
            "images": [{"name": "app", "newName": "reg:5000/app", "newTag": "v2"},
                       {"name": "repo/app", "newTag": "3"}],
            "patches": [{"path": "replicas.yaml"},
                        {"target": {"kind": "RayCluster", "name": "rc"}, "path": "rc.yaml"}],
            "secretGenerator": [{"name": "tok", "literals": ["token=abc"]}],
            "configMapGenerator": [{"name": "cfg", "files": ["k.yaml=data.yaml"]}],
            "generatorOptions": {"disableNameSuffixHash": True}},
        "ns.yaml": {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "dev"}},
        "replicas.yaml": {"apiVersion": "apps/v1", "kind": "Deployment",
                          "metadata": {"name": "web"}, "spec": {"replicas": 5}},
        "rc.yaml": [{"op": "replace", "path": "/spec/workerGroupSpecs/0/replicas", "value": 0}],
        "data.yaml": "a: 1\n",
    })
    objs = {o["kind"]: o for o in render(tmp_path / "ov")}
    assert "namespace" not in objs["Namespace"]["metadata"]
    assert {o["metadata"]["namespace"] for k, o in objs.items() if k != "Namespace"} == {"dev"}
    web = objs["Deployment"]
    assert web["metadata"]["labels"] == {"part-of": "x"} and web["spec"]["replicas"] == 5
    assert web["spec"]["template"]["spec"]["containers"][0]["image"] == "repo/app:3"
    head = objs["RayCluster"]["spec"]["headGroupSpec"]["template"]["spec"]
    assert head["containers"][0]["image"] == head["initContainers"][0]["image"] == "reg:5000/app:v2"
    assert objs["RayCluster"]["spec"]["workerGroupSpecs"][0]["replicas"] == 0
    assert base64.b64decode(objs["Secret"]["data"]["token"]) == b"abc"
    assert objs["ConfigMap"]["data"] == {"k.yaml": "a: 1\n"}
    assert "labels" not in objs["Secret"]["metadata"], "overlay has no labels of its own"


@pytest.mark.parametrize("case,match", [
    ({"namePrefix": "x-"}, "unsupported kustomization fields"),
    ({"configMapGenerator": [{"name": "c", "literals": ["a=1"]}]}, "disableNameSuffixHash"),
    ({"configMapGenerator": [{"name": "c", "files": ["../outside.yaml"]}],
      "generatorOptions": {"disableNameSuffixHash": True}}, "outside the kustomization"),
    ({"patches": [{"patch": yaml.safe_dump({"apiVersion": "ray.io/v1", "kind": "RayCluster",
                                            "metadata": {"name": "rc"}, "spec": {}})}]},
     "custom resource"),
    ({"patches": [{"patch": "- {op: remove, path: /spec}"}]}, "needs a target"),
    ({"patches": [{"target": {"kind": "RayJob"}, "patch": "- {op: remove, path: /spec}"}]},
     "matches no object"),
    ({"resources": ["all.yaml", "all.yaml"]}, "duplicate object"),
])
def test_unsupported_or_inconsistent_input_raises(tmp_path: Path, case: dict, match: str) -> None:
    write(tmp_path, {"outside.yaml": "a: 1\n"})
    kust = {"resources": ["all.yaml"], **case}
    write(tmp_path / "k", {"kustomization.yaml": kust, "all.yaml*": [DEPLOYMENT, RAY]})
    with pytest.raises(RenderError, match=match):
        render(tmp_path / "k")
