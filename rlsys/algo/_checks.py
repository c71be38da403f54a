"""Input checks shared by the ``rlsys.algo`` modules (private).

Shape checks only: they read ``.shape``/``.dtype``, never tensor values, so they cost nothing
and never synchronise a device. Errors name the offending argument.
"""

from __future__ import annotations

import torch


def check_same_shape(reference_name: str, reference: torch.Tensor, **others: object) -> None:
    """Raise ``ValueError`` unless every tensor in ``others`` (None allowed) has the shape of
    ``reference``."""
    for name, tensor in others.items():
        if tensor is None:
            continue
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
        if tensor.shape != reference.shape:
            raise ValueError(
                f"{name} has shape {tuple(tensor.shape)} but {reference_name} has shape "
                f"{tuple(reference.shape)}; they must match"
            )


def check_token_tensors(mask: torch.Tensor, **tensors: object) -> torch.Tensor:
    """Check that ``mask`` is (B, T) and every other tensor matches it; return a bool mask."""
    if mask.dim() != 2:
        raise ValueError(f"mask must be (B, T), got shape {tuple(mask.shape)}")
    check_same_shape("mask", mask, **tensors)
    return mask.bool()


def check_rows(name: str, tensor: torch.Tensor | None, num_rows: int) -> torch.Tensor:
    """Check that ``tensor`` is a (B,) vector with ``num_rows`` entries; returns it."""
    if tensor is None:
        raise ValueError(f"{name} is required for this estimator/function but was None")
    if tensor.dim() != 1 or tensor.shape[0] != num_rows:
        raise ValueError(f"{name} must have shape ({num_rows},), got {tuple(tensor.shape)}")
    return tensor
