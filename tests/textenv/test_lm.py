import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from textenv.lm import IncrementalLM, load_causal_lm


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=97, n_positions=64, n_embd=32, n_layer=2, n_head=2)).eval()


def _full(model, seq):
    with torch.no_grad():
        return torch.log_softmax(model(torch.tensor([seq])).logits[0, -1], -1)


def test_ragged_kv_cache_matches_full_forward_through_restarts(tiny):
    seqs = [[5, 6, 7], [8, 9], [10, 11, 12, 13, 14]]
    inc = IncrementalLM(tiny, 3, pad_token_id=0)
    inc.reset_rows([0, 1, 2], seqs)
    g = torch.Generator().manual_seed(0)
    widths = []
    for t in range(25):
        tokens = torch.randint(1, 97, (3,), generator=g)
        for s, k in zip(seqs, tokens.tolist()):
            s.append(k)
        inc.step(tokens)
        if t % 4 == 1:  # restart one row with a prompt longer than the cache sometimes
            row = t % 3
            seqs[row] = torch.randint(1, 97, (2 + (t * 7) % 11,), generator=g).tolist()
            inc.reset_rows([row], [seqs[row]])
        widths.append(inc.attention_mask.shape[1])
        for i, s in enumerate(seqs):
            assert (inc.next_logprobs[i] - _full(tiny, s)).abs().max() < 1e-4, (t, i)
    assert max(widths) <= max(len(s) for s in seqs) + 25  # trimmed: never the whole history
    assert widths[-1] <= 12 + 12


def test_errors(tiny, tmp_path):
    inc = IncrementalLM(tiny, 2, pad_token_id=0)
    with pytest.raises(RuntimeError, match="before reset_rows"):
        inc.step(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="empty prompt"):
        inc.reset_rows([0, 1], [[1], []])
    with pytest.raises(FileNotFoundError, match="no such model directory"):
        load_causal_lm(tmp_path / "missing")
