"""Small pieces shared by the built-in worlds that train a character-level LM: the tokenizer and the training loop.

:func:`char_tokenizer` makes a ``PreTrainedTokenizerFast`` with one token per character (it saves, reloads with
``AutoTokenizer`` and decodes back to the exact text); :func:`train_char_lm` trains a tiny GPT-2 on a list of
texts with a seeded, deterministic loop (same texts, seed and thread count: the same weights, bit for bit).

>>> tok = char_tokenizer("abc\\n")
>>> tok.encode("ab\\nc", add_special_tokens=False), tok.eos_token_id, tok.pad_token_id is None
([2, 3, 5, 4], 0, True)
>>> tok.decode([2, 3, 5, 4, 0], skip_special_tokens=True)
'ab\\nc'
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from textenv.lm import pad_batch

EOS, UNK = "<eos>", "<unk>"


def char_tokenizer(characters: str, eos: str = EOS, unk: str = UNK, pad: str | None = None):
    """A character-level ``PreTrainedTokenizerFast``: ids ``0, 1`` are ``eos`` and ``unk`` (then ``pad`` if given),
    then one token per character of ``characters`` in order. Any other character encodes as ``unk``; no special
    token is added on encoding; decoding joins the characters (no spaces inserted, none cleaned up).
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if len(set(characters)) != len(characters) or not characters:
        raise ValueError(f"characters={characters!r} must be a non-empty string of distinct characters")
    specials = [eos, unk] + ([pad] if pad is not None else [])
    vocab = {token: i for i, token in enumerate([*specials, *characters])}
    if len(vocab) != len(specials) + len(characters):
        raise ValueError(f"the special tokens {specials} must be distinct and not among characters={characters!r}")
    model = Tokenizer(models.WordLevel(vocab, unk_token=unk))
    model.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # every character, newline too
    model.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=model, eos_token=eos, unk_token=unk, pad_token=pad,
                                   model_max_length=10**6, clean_up_tokenization_spaces=False)


def train_char_lm(texts: list[str], tokenizer, *, n_layer: int, n_embd: int, n_head: int, n_positions: int,
                  steps: int, batch_size: int, lr: float, seed: int, desc: str = "training LM",
                  progress: bool = True):
    """A tiny ``GPT2LMHeadModel`` trained on ``text + EOS`` rows (the loss on every token and EOS, none on padding);
    returns ``(model, losses)``, the model in eval mode, its config's EOS and pad set to ``tokenizer``'s EOS.

    ``steps`` AdamW steps of ``batch_size`` rows drawn with replacement by a generator seeded with ``seed`` (which
    seeds the initialisation too); linear warm-up over 5% of the steps, then cosine decay to 10% of ``lr``.
    Deterministic for a fixed torch thread count (wrap the call in :func:`textenv.world.cache.torch_threads`).
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    eos = tokenizer.eos_token_id
    rows = [ids + [eos] for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    longest = max(len(r) for r in rows)
    if longest > n_positions:
        raise ValueError(f"a text with EOS is {longest} tokens, longer than n_positions={n_positions}")
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(
        vocab_size=len(tokenizer), n_positions=n_positions, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
        bos_token_id=eos, eos_token_id=eos, pad_token_id=eos,
    ))
    model.generation_config.pad_token_id = eos
    ids, mask = pad_batch(rows, eos, "right")  # (N, W)
    labels = ids.masked_fill(mask == 0, -100)[:, 1:]  # (N, W-1): the target of position t is token t + 1
    ids = ids[:, :-1]  # (N, W-1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = max(1, steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        done = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * done))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    generator = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    model.train()
    bar = tqdm(range(steps), desc=desc, disable=not progress, unit="step", mininterval=1.0)
    for step in bar:
        batch = torch.randint(len(ids), (batch_size,), generator=generator)  # (B,)
        width = int(mask[batch].sum(-1).max()) - 1  # the longest row of the batch, EOS included
        logits = model(input_ids=ids[batch, :width], attention_mask=mask[batch, :width]).logits  # (B, width, V)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[batch, :width].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    return model, losses
