"""Cross-document attention: packed rows reproduce documents run one by one (tiny random Llama)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rlsys.data.attention import block_causal_mask, packed_forward
from rlsys.data.encode import Encoded
from rlsys.data.packing import collate_packed, collate_padded, pack
from rlsys.modeling import load_causal_lm

NEG = torch.finfo(torch.float32).min


def _random_docs(lengths, vocab, seed=0, mask_prefix=0):
    g = torch.Generator().manual_seed(seed)
    docs = []
    for n in lengths:
        ids = torch.randint(0, vocab, (n,), generator=g).tolist()
        mask = [False] + [i >= mask_prefix for i in range(1, n)]
        docs.append(Encoded(ids, mask))
    return docs


def _token_nll(logits, input_ids, mask):
    """Summed next-token NLL over counted tokens, and their number."""
    nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), input_ids[:, 1:], reduction="none")
    target = mask[:, 1:]
    return (nll * target).sum(), target.sum()


def test_block_causal_mask_values():
    mask = block_causal_mask(torch.tensor([[1, 1, 2, 2, 0]]))
    allowed = (mask[0, 0] == 0).int().tolist()
    assert allowed == [
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [0, 0, 1, 0, 0],
        [0, 0, 1, 1, 0],
        [0, 0, 0, 0, 1],  # padding attends to itself only
    ]
    assert mask.shape == (1, 1, 5, 5) and mask.min() == NEG


def test_packed_loss_equals_documents_one_by_one(tiny_model):
    vocab = tiny_model.config.vocab_size
    docs = _random_docs([5, 23, 9, 31, 3, 12, 2], vocab, mask_prefix=2)
    bins = pack(docs, 32)
    assert any(len(b) > 1 for b in bins)
    batch = collate_packed(docs, bins, 32, pad_id=0)
    with torch.no_grad():
        total, count = _token_nll(packed_forward(tiny_model, batch), batch.input_ids, batch.mask)
        ref_total = ref_count = 0
        for doc in docs:
            ids = torch.tensor([doc.input_ids])
            nll, n = _token_nll(tiny_model(ids).logits, ids, torch.tensor([doc.mask]))
            ref_total, ref_count = ref_total + nll, ref_count + n
    assert count == ref_count == sum(d.num_targets for d in docs)
    torch.testing.assert_close(total / count, ref_total / ref_count, rtol=1e-5, atol=1e-6)


def test_document_logits_do_not_depend_on_neighbours(tiny_model):
    vocab = tiny_model.config.vocab_size
    target, *_ = _random_docs([11], vocab, seed=1)
    left = _random_docs([7, 4], vocab, seed=2)
    other_left = _random_docs([3, 9], vocab, seed=3)
    rows = [left + [target], other_left + [target], [target] + _random_docs([6], vocab, seed=4)]
    starts = [11, 12, 0]
    outputs = []
    with torch.no_grad():
        for docs, start in zip(rows, starts, strict=True):
            batch = collate_packed(docs, [list(range(len(docs)))], 32, pad_id=0)
            outputs.append(packed_forward(tiny_model, batch)[0, start : start + 11])
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outputs[0], outputs[2], rtol=1e-5, atol=1e-5)
    # Sanity: without the block mask, neighbours would change the logits.
    ids = torch.tensor([left[0].input_ids + left[1].input_ids + target.input_ids])
    with torch.no_grad():
        leaky = tiny_model(ids).logits[0, 11:22]
    assert (leaky - outputs[0]).abs().max() > 1e-3


def test_padded_batch_matches_and_padding_is_finite(tiny_model):
    docs = _random_docs([4, 10], tiny_model.config.vocab_size, seed=5)
    batch = collate_padded(docs, pad_id=0)
    with torch.no_grad():
        logits = packed_forward(tiny_model, batch)
        alone = tiny_model(torch.tensor([docs[0].input_ids])).logits[0]
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(logits[0, :4], alone, rtol=1e-5, atol=1e-5)


def test_eager_attention_honours_the_mask(tiny_model_dir):
    model = load_causal_lm(tiny_model_dir, attn_implementation="eager")
    docs = _random_docs([6, 9], model.config.vocab_size, seed=6)
    batch = collate_packed(docs, [[0, 1]], 16, pad_id=0)
    with torch.no_grad():
        logits = packed_forward(model, batch)
        alone = model(torch.tensor([docs[1].input_ids])).logits[0]
    torch.testing.assert_close(logits[0, 6:15], alone, rtol=1e-5, atol=1e-5)


def test_gradients_match_too(tiny_model_dir):
    model = load_causal_lm(tiny_model_dir)
    docs = _random_docs([8, 5, 13], model.config.vocab_size, seed=7)
    batch = collate_packed(docs, [[0, 1, 2]], 32, pad_id=0)
    total, count = _token_nll(packed_forward(model, batch), batch.input_ids, batch.mask)
    (total / count).backward()
    packed_grad = model.model.layers[0].self_attn.q_proj.weight.grad.clone()
    model.zero_grad()
    ref_total = 0
    for doc in docs:
        ids = torch.tensor([doc.input_ids])
        ref_total = ref_total + _token_nll(model(ids).logits, ids, torch.tensor([doc.mask]))[0]
    (ref_total / count).backward()
    ref_grad = model.model.layers[0].self_attn.q_proj.weight.grad
    torch.testing.assert_close(packed_grad, ref_grad, rtol=1e-5, atol=1e-8)
