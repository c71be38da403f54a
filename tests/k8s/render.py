"""A small kustomize renderer for the kustomizations in ``k8s/``, so tests need no binary.

It implements exactly the kustomization fields the manifests use, with kustomize v5 semantics:
``resources`` (files and directories), ``namespace``, ``labels`` (metadata labels only),
``images`` (every ``containers``/``initContainers`` list at any depth, as kustomize does for
custom resources too), ``patches`` (strategic-merge patches of core kinds, RFC 6902 JSON patches
with a ``target``), ``configMapGenerator``/``secretGenerator`` (``files`` and ``literals``) and
``generatorOptions.disableNameSuffixHash: true``.

It does not implement anything else: an unknown field, a generator without
``disableNameSuffixHash`` (name hashes), a strategic-merge patch of a custom resource (kustomize
replaces lists there, a trap) or a list merge it does not know raises ``RenderError`` instead of
rendering something kustomize would not. ``kubectl kustomize DIR`` renders the same objects
(checked by hand with kustomize v5.5; the output order differs).
"""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]

SUPPORTED_FIELDS = {"apiVersion", "kind", "namespace", "labels", "resources", "images",
                    "patches", "configMapGenerator", "secretGenerator", "generatorOptions"}
CLUSTER_SCOPED_KINDS = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume",
                        "StorageClass", "CustomResourceDefinition", "PriorityClass"}
# Strategic-merge list keys of the core fields the patches touch (from the Kubernetes API's
# patchMergeKey); any other list of objects in a patch is an error.
MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "volumes": "name",
              "volumeMounts": "mountPath", "imagePullSecrets": "name", "tolerations": None}
CORE_GROUPS = {"", "apps", "autoscaling", "batch", "policy", "networking.k8s.io"}


class RenderError(ValueError):
    """A kustomization uses something this renderer does not implement, or is inconsistent."""


def load_yaml_docs(path: Path) -> list[Obj]:
    """All non-empty YAML documents of ``path``; each must be a mapping."""
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    for d in docs:
        if not isinstance(d, dict):
            raise RenderError(f"{path}: every document must be a mapping, got {type(d).__name__}")
    return docs


def render(directory: str | Path) -> list[Obj]:
    """Render the kustomization in ``directory`` into a list of Kubernetes objects."""
    root = Path(directory)
    kfile = root / "kustomization.yaml"
    if not kfile.is_file():
        raise RenderError(f"{root}: no kustomization.yaml")
    (kust,) = load_yaml_docs(kfile)
    unknown = set(kust) - SUPPORTED_FIELDS
    if unknown:
        raise RenderError(f"{kfile}: unsupported kustomization fields {sorted(unknown)}")
    objs: list[Obj] = []
    for entry in kust.get("resources", []):
        target = root / entry
        objs.extend(render(target) if target.is_dir() else load_yaml_docs(target))
    objs.extend(_generate(root, kust))
    for patch in kust.get("patches", []):
        objs = _apply_patch_entry(root, patch, objs)
    if "namespace" in kust:
        for obj in objs:
            if obj["kind"] not in CLUSTER_SCOPED_KINDS:
                obj.setdefault("metadata", {})["namespace"] = kust["namespace"]
    for label_set in kust.get("labels", []):
        _apply_labels(kfile, label_set, objs)
    for image in kust.get("images", []):
        if not set(image) <= {"name", "newName", "newTag"}:
            raise RenderError(f"{kfile}: images entries support name/newName/newTag only")
        for obj in objs:
            _set_images(obj, image)
    _check_unique(kfile, objs)
    return objs


def _generate(root: Path, kust: Obj) -> list[Obj]:
    options = kust.get("generatorOptions", {})
    gens = [("ConfigMap", g) for g in kust.get("configMapGenerator", [])]
    gens += [("Secret", g) for g in kust.get("secretGenerator", [])]
    if gens and options != {"disableNameSuffixHash": True}:
        raise RenderError(f"{root}: generators need generatorOptions exactly "
                          "{disableNameSuffixHash: true} (name hashes are not implemented)")
    out = []
    for kind, gen in gens:
        unknown = set(gen) - {"name", "files", "literals"}
        if unknown:
            raise RenderError(f"{root}: {kind} generator {gen.get('name')!r}: unsupported "
                              f"fields {sorted(unknown)}")
        data: dict[str, str] = {}
        for spec in gen.get("files", []):
            key, _, rel = spec.rpartition("=")
            path = root / rel
            if not path.resolve().is_relative_to(root.resolve()):
                raise RenderError(f"{root}: {rel} is outside the kustomization directory "
                                  "(kustomize's default load restrictor refuses it)")
            data[key or path.name] = path.read_text()
        for spec in gen.get("literals", []):
            key, sep, value = spec.partition("=")
            if not sep:
                raise RenderError(f"{root}: literal {spec!r} is not KEY=VALUE")
            data[key] = value
        obj: Obj = {"apiVersion": "v1", "kind": kind, "metadata": {"name": gen["name"]}}
        if kind == "Secret":
            obj["type"] = "Opaque"
            data = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        obj["data"] = data
        out.append(obj)
    return out


def _matches(obj: Obj, target: Obj) -> bool:
    group, _, version = obj["apiVersion"].rpartition("/")
    want = {"group": group, "version": version, "kind": obj["kind"],
            "name": obj["metadata"]["name"]}
    unknown = set(target) - set(want)
    if unknown:
        raise RenderError(f"patch target selector fields {sorted(unknown)} are not supported")
    return all(want[k] == v for k, v in target.items())


def _apply_patch_entry(root: Path, entry: Obj, objs: list[Obj]) -> list[Obj]:
    if set(entry) - {"path", "patch", "target"} or ("path" in entry) == ("patch" in entry):
        raise RenderError(f"{root}: patch entry needs exactly one of path/patch (and an "
                          f"optional target), got {sorted(entry)}")
    text = (root / entry["path"]).read_text() if "path" in entry else entry["patch"]
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    if len(docs) == 1 and isinstance(docs[0], list):
        if "target" not in entry:
            raise RenderError(f"{root}: a JSON 6902 patch needs a target")
        hits = [o for o in objs if _matches(o, entry["target"])]
        if not hits:
            raise RenderError(f"{root}: patch target {entry['target']} matches no object")
        for obj in hits:
            apply_json6902(obj, docs[0])
        return objs
    for doc in docs:
        target = entry.get("target") or {"kind": doc["kind"], "name": doc["metadata"]["name"]}
        hits = [o for o in objs if _matches(o, target)]
        if not hits:
            raise RenderError(f"{root}: strategic-merge patch for {target} matches no object")
        if doc.get("$patch") == "delete":
            objs = [o for o in objs if not any(o is h for h in hits)]
            continue
        for obj in hits:
            if obj["apiVersion"].rpartition("/")[0] not in CORE_GROUPS:
                raise RenderError(f"{root}: strategic-merge patch of custom resource "
                                  f"{obj['kind']}: kustomize replaces its lists; use a JSON "
                                  "6902 patch with a target")
            merged = strategic_merge(obj, doc)
            obj.clear()
            obj.update(merged)
    return objs


def strategic_merge(base: Any, patch: Any, field: str = "") -> Any:
    """Kubernetes strategic merge of ``patch`` into ``base`` (a new value; inputs untouched).

    Maps merge key by key (``null`` deletes a key); lists of objects listed in ``MERGE_KEYS``
    merge element-wise by their merge key; lists of scalars and ``MERGE_KEYS`` entries with key
    None are replaced; any other list of objects raises ``RenderError``.
    """
    if isinstance(patch, dict) and isinstance(base, dict):
        out = copy.deepcopy(base)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            elif key in out:
                out[key] = strategic_merge(out[key], value, key)
            else:
                out[key] = copy.deepcopy(value)
        return out
    if isinstance(patch, list) and any(isinstance(x, dict) for x in patch):
        if field not in MERGE_KEYS:
            raise RenderError(f"strategic merge of list field {field!r} is not implemented")
        key = MERGE_KEYS[field]
        if key is None or not isinstance(base, list):
            return copy.deepcopy(patch)
        # Kubernetes' order: the patch's elements (merged into their base twins) in patch
        # order, then the base elements the patch does not mention.
        by_key = {old.get(key): old for old in base}
        patched = [strategic_merge(by_key.get(item.get(key), {}), item, field) for item in patch]
        named = {item.get(key) for item in patch}
        return patched + [copy.deepcopy(old) for old in base if old.get(key) not in named]
    return copy.deepcopy(patch)


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise RenderError(f"JSON pointer {path!r} must start with '/'")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc: Any, parts: list[str], path: str) -> Any:
    for part in parts:
        try:
            doc = doc[int(part)] if isinstance(doc, list) else doc[part]
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise RenderError(f"JSON patch path {path!r}: {part!r} does not exist") from exc
    return doc


def apply_json6902(obj: Obj, ops: list[Obj]) -> None:
    """Apply RFC 6902 ``add``/``replace``/``remove``/``test`` operations to ``obj`` in place."""
    for op in ops:
        parts = _pointer(op["path"])
        parent, last = _walk(obj, parts[:-1], op["path"]), parts[-1]
        kind = op["op"]
        if kind == "test":
            if _walk(parent, [last], op["path"]) != op["value"]:
                raise RenderError(f"JSON patch test failed at {op['path']!r}")
        elif kind == "remove":
            _walk(parent, [last], op["path"])
            del parent[int(last) if isinstance(parent, list) else last]
        elif kind == "replace":
            _walk(parent, [last], op["path"])
            parent[int(last) if isinstance(parent, list) else last] = copy.deepcopy(op["value"])
        elif kind == "add":
            if isinstance(parent, list):
                index = len(parent) if last == "-" else int(last)
                parent.insert(index, copy.deepcopy(op["value"]))
            else:
                parent[last] = copy.deepcopy(op["value"])
        else:
            raise RenderError(f"JSON patch op {kind!r} is not implemented")


def _apply_labels(kfile: Path, label_set: Obj, objs: list[Obj]) -> None:
    if set(label_set) != {"pairs"}:
        raise RenderError(f"{kfile}: labels entries support only `pairs` (metadata labels), "
                          f"got {sorted(label_set)}")
    for obj in objs:
        obj.setdefault("metadata", {}).setdefault("labels", {}).update(label_set["pairs"])


def _split_image(image: str) -> tuple[str, str]:
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:
        return image, ""
    return name, tag


def _set_images(node: Any, image: Obj) -> None:
    """Rewrite ``image`` fields of every container list below ``node`` (kustomize semantics)."""
    if isinstance(node, list):
        for item in node:
            _set_images(item, image)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key in ("containers", "initContainers") and isinstance(value, list):
            for container in value:
                name, tag = _split_image(container.get("image", ""))
                if name == image["name"]:
                    new_tag = image.get("newTag", tag)
                    new_name = image.get("newName", name)
                    container["image"] = f"{new_name}:{new_tag}" if new_tag else new_name
        _set_images(value, image)


def _check_unique(kfile: Path, objs: list[Obj]) -> None:
    seen = set()
    for obj in objs:
        ident = (obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"])
        if ident in seen:
            raise RenderError(f"{kfile}: duplicate object {ident}")
        seen.add(ident)
