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


def test_first_reset_of_some_rows_builds_a_cache_of_all_rows(tiny):
    """Regression: a first ``reset_rows`` covering only rows 0 and 2 of 3 built a 2-row cache, so ``step`` on
    3 rows raised ``RuntimeError: shape '[3, -1]' ...``; the rows not yet reset must get slots of their own."""
    seqs = {0: [5, 6, 7], 2: [8, 9]}
    inc = IncrementalLM(tiny, 3, pad_token_id=0)
    inc.reset_rows([0, 2], [seqs[0], seqs[2]])
    assert inc.attention_mask.shape[0] == 3
    for i, s in seqs.items():
        assert (inc.next_logprobs[i] - _full(tiny, s)).abs().max() < 1e-4
    inc.step(torch.tensor([11, 12, 13]))
    seqs[0].append(11), seqs[2].append(13)
    inc.reset_rows([1], [[20, 21]])  # the row never reset joins later
    seqs[1] = [20, 21]
    inc.step(torch.tensor([14, 15, 16]))
    for i, k in enumerate([14, 15, 16]):
        seqs[i].append(k)
    for i, s in seqs.items():
        assert (inc.next_logprobs[i] - _full(tiny, s)).abs().max() < 1e-4, i


def test_first_reset_with_rows_in_permuted_order_puts_each_prompt_in_its_row(tiny):
    """Regression: a first ``reset_rows([2, 0, 1], ...)`` stored the prefill in argument order, so row 0 was fed
    row 2's prompt; every row must continue its own prompt."""
    seqs = {2: [5, 6, 7], 0: [8, 9], 1: [10, 11, 12, 13]}
    inc = IncrementalLM(tiny, 3, pad_token_id=0)
    inc.reset_rows([2, 0, 1], [seqs[2], seqs[0], seqs[1]])
    inc.step(torch.tensor([30, 31, 32]))
    for i, k in enumerate([30, 31, 32]):
        seqs[i].append(k)
    for i, s in seqs.items():
        assert (inc.next_logprobs[i] - _full(tiny, s)).abs().max() < 1e-4, i


def test_reset_rows_refuses_bad_row_indices(tiny):
    inc = IncrementalLM(tiny, 2, pad_token_id=0)
    for rows in ([0, 0], [2], [-1]):
        with pytest.raises(ValueError, match=r"distinct row indices in \[0, 2\)"):
            inc.reset_rows(rows, [[1]] * len(rows))
    assert inc.cache is None  # refused before any forward


def test_pad_batch_by_hand():
    """The one padding helper (IncrementalLM, the RM trainer, the judge, the world build, agents' batches)."""
    from textenv.lm import pad_batch

    ids, mask = pad_batch([[5, 6, 7], [8], []], pad_id=1)
    assert ids.tolist() == [[5, 6, 7], [1, 1, 8], [1, 1, 1]] and mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 0, 0]]
    ids, mask = pad_batch([[5, 6, 7], [8]], pad_id=1, side="right")
    assert ids.tolist() == [[5, 6, 7], [8, 1, 1]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert ids.dtype == mask.dtype == torch.long
    with pytest.raises(ValueError, match="side='middle' must be 'left' or 'right'"):
        pad_batch([[1]], 0, side="middle")


def test_sequence_logprobs_sums_each_completion_as_an_unpadded_forward_does(tiny):
    """``textenv.lm.sequence_logprobs`` (the judge's and DPO's, re-exported by ``agents.policies.lm``): the summed
    log-probability of each completion in a ragged right-padded batch equals the sum read from one unpadded
    sequence at a time, by hand; a ``temperature`` attribute (an agents ``LMPolicy``) divides the logits."""
    from agents.policies.lm import LMPolicy
    from agents.policies.lm import sequence_logprobs as reexported
    from textenv.lm import completion_batch, sequence_logprobs

    assert reexported is sequence_logprobs
    prompts, completions = [[5, 6, 7], [8]], [[9], [10, 11, 12]]
    batch = completion_batch(prompts, completions, pad_id=0)
    for model, temperature in ((tiny, 1.0), (LMPolicy(tiny, temperature=0.5), 0.5)):
        expected = []
        for p, c in zip(prompts, completions):
            with torch.no_grad():
                logits = tiny(torch.tensor([p + c])).logits[0] / temperature  # (L, V)
            logp = torch.log_softmax(logits, -1)
            expected.append(sum(logp[len(p) - 1 + t, token].item() for t, token in enumerate(c)))
        with torch.no_grad():
            assert sequence_logprobs(model, batch).tolist() == pytest.approx(expected, abs=1e-5)


def test_our_saves_show_no_shard_progress_bars(tiny, tmp_path, capfd):
    from transformers.utils import logging as hf_logging

    from textenv.lm import save_pretrained

    assert save_pretrained(tiny, tmp_path / "m") == tmp_path / "m" and (tmp_path / "m" / "config.json").exists()
    assert "Writing" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled()  # switched back on afterwards


def test_identical_prompts_are_prefilled_once_and_each_row_then_goes_its_own_way(tiny):
    """A group of completions of one prompt (GRPO's K): one prefill row per distinct prompt, the cache rows copied;
    every row then matches a full forward of its own sequence, also when it restarts later (a splice)."""
    batches = []
    hook = tiny.register_forward_hook(lambda module, args, kwargs, out: batches.append(kwargs["input_ids"].shape)
                                      if "input_ids" in kwargs else None,
                                      with_kwargs=True)
    try:
        _group_prefill(tiny, batches)
    finally:
        hook.remove()


def _group_prefill(tiny, batches):
    seqs = [[5, 6, 7], [5, 6, 7], [8, 9], [5, 6, 7]]
    inc = IncrementalLM(tiny, 4, pad_token_id=0)
    inc.reset_rows([0, 1, 2, 3], [list(s) for s in seqs])
    assert batches[-1] == (2, 3)  # two distinct prompts prefilled
    g = torch.Generator().manual_seed(1)
    for t in range(6):
        tokens = torch.randint(1, 97, (4,), generator=g)
        for s, k in zip(seqs, tokens.tolist()):
            s.append(k)
        inc.step(tokens)
        if t == 2:  # two rows restart with the same new prompt
            seqs[1], seqs[3] = [3, 4], [3, 4]
            inc.reset_rows([1, 3], [[3, 4], [3, 4]])
            assert batches[-1] == (1, 2)
        for i, s in enumerate(seqs):
            assert (inc.next_logprobs[i] - _full(tiny, s)).abs().max() < 1e-4, (t, i)
