"""Masked negative log-likelihood for SFT / CPT (and the NLL term of DPO-style mixes).

Returns a per-token loss; reduce it with an entry of ``aggregation.AGGREGATIONS``
(``token_mean`` for the usual SFT loss). Label masking itself happens in ``rlsys.data``.
"""

from __future__ import annotations

import torch

from rlsys.algo._checks import check_token_tensors


def masked_nll(
    logprobs: torch.Tensor,  # (B, T) log-probs of the target tokens (``token_logprobs``)
    mask: torch.Tensor,  # (B, T) bool, True on training targets
) -> torch.Tensor:  # (B, T)
    """``-logprobs`` where ``mask`` is True, exactly 0 (with zero gradient) elsewhere."""
    mask = check_token_tensors(mask, logprobs=logprobs)
    return torch.where(mask, -logprobs, 0)
