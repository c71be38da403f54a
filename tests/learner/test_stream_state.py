"""``learner.engine.iter_gathered_state``: the weight stream a collective sync sends from.

It yields one CPU copy at a time (a generator: nothing is gathered before it is asked for),
every parameter and persistent buffer once (tied weights once), cast when asked, and nothing
on ranks other than 0; ``gathered_state_dict`` is the same stream collected. The ZeRO-3 path
on two ranks is in tests/actors/test_collective_sync.py.
"""

from __future__ import annotations

import inspect

import torch

from learner.engine import gathered_state_dict, iter_gathered_state


class Tied(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(5, 3)
        self.head = torch.nn.Linear(3, 5, bias=False)
        self.head.weight = self.embed.weight  # tied, like an LM head
        self.norm = torch.nn.LayerNorm(3)
        self.register_buffer("scale", torch.tensor([2.0]))
        self.register_buffer("scratch", torch.zeros(2), persistent=False)


def test_stream_yields_copies_one_at_a_time_and_matches_the_dict():
    torch.manual_seed(0)
    model = Tied()
    stream = iter_gathered_state(model, zero_stage=0, rank=0)
    assert inspect.isgenerator(stream)
    name, first = next(stream)
    assert name == "embed.weight"
    first.add_(1.0)  # a copy: the model is untouched
    assert not torch.equal(first, model.embed.weight)
    rest = dict(stream)
    assert list(rest) == ["norm.weight", "norm.bias", "scale"]  # tied head and scratch absent
    whole = gathered_state_dict(model, zero_stage=0, rank=0)
    assert list(whole) == ["embed.weight", *rest]
    torch.testing.assert_close(whole["embed.weight"], model.embed.weight.detach())


def test_stream_casts_floats_and_yields_nothing_off_rank_zero():
    model = Tied()
    half = dict(iter_gathered_state(model, zero_stage=0, rank=0, dtype=torch.bfloat16))
    assert {t.dtype for t in half.values()} == {torch.bfloat16}
    assert list(iter_gathered_state(model, zero_stage=0, rank=1)) == []
    assert gathered_state_dict(model, zero_stage=0, rank=1) is None
