"""Model merging as pure tensor math: linear averaging, task arithmetic, TIES and SLERP, each on
one tensor (a parameter of the same name from every model), plus a state-dict check.

Every entry of ``MERGE_METHODS`` is called as::

    merged = fn(tensors, *, weights, base=None, t=0.5, density=1.0, scale=1.0)

with ``tensors`` the same-shaped parameters of the models to merge (list order = the recipe's),
``weights`` one float per tensor and ``base`` the common ancestor's parameter (task arithmetic
and TIES). The result has the first tensor's dtype; the arithmetic runs in float32 (float64 in,
float64 out). This module does not read or write checkpoints, and does not know about configs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

from rlsys.registry import Registry

MergeFn = Callable[..., torch.Tensor]
MERGE_METHODS: Registry[MergeFn] = Registry("merge method")


def _compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    return torch.float64 if tensor.dtype == torch.float64 else torch.float32


def _prepare(tensors: Sequence[torch.Tensor], weights: Sequence[float],
             base: torch.Tensor | None, *,
             need_base: bool) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    if not tensors:
        raise ValueError("nothing to merge: tensors is empty")
    if len(weights) != len(tensors):
        raise ValueError(f"{len(tensors)} tensors but {len(weights)} weights")
    if need_base and base is None:
        raise ValueError("this merge method needs the base (common ancestor) tensor")
    shape = tensors[0].shape
    others: list[torch.Tensor] = [*tensors[1:], *([base] if base is not None else [])]
    for i, x in enumerate(others, start=1):
        if x.shape != shape:
            raise ValueError(f"tensor {i} has shape {tuple(x.shape)}, expected {tuple(shape)}")
    dtype = _compute_dtype(tensors[0])
    return [x.to(dtype) for x in tensors], base.to(dtype) if base is not None else None


def _prepare_with_base(tensors: Sequence[torch.Tensor], weights: Sequence[float],
                       base: torch.Tensor | None) -> tuple[list[torch.Tensor], torch.Tensor]:
    xs, b = _prepare(tensors, weights, base, need_base=True)
    assert b is not None  # need_base=True: _prepare raised otherwise
    return xs, b


def _weighted_sum(weights: Sequence[float], xs: Sequence[torch.Tensor]) -> torch.Tensor:
    # Same left-to-right order as builtin ``sum``; a Tensor start keeps the type a Tensor.
    total = weights[0] * xs[0]
    for w, x in zip(weights[1:], xs[1:], strict=True):
        total = total + w * x
    return total


@MERGE_METHODS.decorator("linear")
def linear(
    tensors: Sequence[torch.Tensor],  # K x (...) same shape
    *,
    weights: Sequence[float],
    base: torch.Tensor | None = None,  # unused
    t: float = 0.5,  # unused
    density: float = 1.0,  # unused
    scale: float = 1.0,  # unused
) -> torch.Tensor:
    """Weighted average ``sum_k w_k x_k / sum_k w_k`` ("model soup", Wortsman et al. 2022)."""
    xs, _ = _prepare(tensors, weights, None, need_base=False)
    total = sum(weights)
    if total == 0:
        raise ValueError("linear merge: the weights sum to 0")
    merged = _weighted_sum(weights, xs)
    return (merged / total).to(tensors[0].dtype)


@MERGE_METHODS.decorator("task_arithmetic")
def task_arithmetic(
    tensors: Sequence[torch.Tensor],  # K x (...)
    *,
    weights: Sequence[float],
    base: torch.Tensor | None = None,  # (...) required
    t: float = 0.5,  # unused
    density: float = 1.0,  # unused
    scale: float = 1.0,
) -> torch.Tensor:
    """``base + scale * sum_k w_k (x_k - base)``: adding task vectors (Ilharco et al. 2023,
    "Editing Models with Task Arithmetic", Eq. 1); negative weights subtract a task."""
    xs, b = _prepare_with_base(tensors, weights, base)
    delta = _weighted_sum(weights, [x - b for x in xs])
    return (b + scale * delta).to(tensors[0].dtype)


def _trim(task: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the ``ceil(density * n)`` largest-magnitude entries, zero the rest (TIES step 1)."""
    if density >= 1.0:
        return task
    k = max(1, int(-(-density * task.numel() // 1)))  # ceil, without importing math
    flat = task.flatten()
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[flat.abs().topk(k).indices] = True
    return torch.where(keep, flat, 0).view_as(task)


@MERGE_METHODS.decorator("ties")
def ties(
    tensors: Sequence[torch.Tensor],  # K x (...)
    *,
    weights: Sequence[float],
    base: torch.Tensor | None = None,  # (...) required
    t: float = 0.5,  # unused
    density: float = 1.0,
    scale: float = 1.0,
) -> torch.Tensor:
    """TIES-merging (Yadav et al. 2023, Alg. 1): task vectors ``tau_k = w_k (x_k - base)`` are
    (1) trimmed to their top ``density`` fraction by magnitude, (2) a sign is elected per entry,
    ``sign(sum_k tau_k)``, and (3) the disjoint mean is taken over the tasks whose (trimmed,
    non-zero) entry has the elected sign; the result is ``base + scale * mean``. Entries where
    no task survives keep the base value."""
    if not 0.0 < density <= 1.0:
        raise ValueError(f"ties: density must be in (0, 1], got {density}")
    xs, b = _prepare_with_base(tensors, weights, base)
    taus = torch.stack([_trim(w * (x - b), density) for w, x in zip(weights, xs, strict=True)])
    elected = torch.sign(taus.sum(0))
    agree = (torch.sign(taus) == elected) & (taus != 0)
    count = agree.sum(0)
    mean = torch.where(agree, taus, 0).sum(0) / count.clamp(min=1)
    return (b + scale * mean).to(tensors[0].dtype)


@MERGE_METHODS.decorator("slerp")
def slerp(
    tensors: Sequence[torch.Tensor],  # 2 x (...)
    *,
    weights: Sequence[float] = (1.0, 1.0),  # unused
    base: torch.Tensor | None = None,  # unused
    t: float = 0.5,
    density: float = 1.0,  # unused
    scale: float = 1.0,  # unused
) -> torch.Tensor:
    """Spherical interpolation from ``a = tensors[0]`` (``t = 0``) to ``b = tensors[1]``
    (``t = 1``), per tensor (Shoemake 1985; as in mergekit): with ``omega`` the angle between
    the flattened ``a`` and ``b``, ``sin((1-t) omega)/sin(omega) a + sin(t omega)/sin(omega) b``.
    Nearly (anti)parallel tensors (``|cos omega| > 1 - 1e-6``) and zero tensors fall back to the
    linear ``(1-t) a + t b``."""
    if len(tensors) != 2:
        raise ValueError(f"slerp merges exactly 2 tensors, got {len(tensors)}")
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"slerp: t must be in [0, 1], got {t}")
    a, b = _prepare(tensors, [1.0, 1.0], None, need_base=False)[0]
    norm_a, norm_b = a.norm(), b.norm()
    lerp = (1 - t) * a + t * b
    if norm_a == 0 or norm_b == 0:
        return lerp.to(tensors[0].dtype)
    cos = ((a.flatten() / norm_a) @ (b.flatten() / norm_b)).clamp(-1.0, 1.0)
    if cos.abs() > 1 - 1e-6:
        return lerp.to(tensors[0].dtype)
    omega = torch.arccos(cos)
    sin = torch.sin(omega)
    merged = torch.sin((1 - t) * omega) / sin * a + torch.sin(t * omega) / sin * b
    return merged.to(tensors[0].dtype)


def check_compatible(states: Mapping[str, Mapping[str, torch.Tensor]]) -> None:
    """Raise ``ValueError`` naming the first tensor (in the first model's key order) that is
    missing from, or has another shape in, another model; ``states`` maps a model's label to
    its state dict."""
    labels = list(states)
    if len(labels) < 2:
        return
    first = states[labels[0]]
    for label in labels[1:]:
        other = states[label]
        for name, tensor in first.items():
            if name not in other:
                raise ValueError(f"tensor {name!r} of {labels[0]} is missing from {label}")
            if other[name].shape != tensor.shape:
                raise ValueError(
                    f"tensor {name!r} differs in shape: {tuple(tensor.shape)} in {labels[0]}, "
                    f"{tuple(other[name].shape)} in {label}")
        extra = [n for n in other if n not in first]
        if extra:
            raise ValueError(f"tensor {extra[0]!r} of {label} is missing from {labels[0]}")
