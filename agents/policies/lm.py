"""The LM policy: any Hugging Face causal LM plus a value head on its last hidden state (one shared trunk).

Acting uses the LM's own KV cache (:class:`agents.policies.sampler.LMSampler`): one ``(N, 1)`` forward per token for
the whole batch. Learning uses one teacher-forced forward per sequence: :meth:`LMPolicy.evaluate` reads the
log-probability, entropy and value of every completion token from a single pass over ``prompt + completion``.

Sequences are laid out as the text env's observations are: prompt then completion, right-padded. The token at
position ``p + t`` (``p`` = prompt length) is predicted from position ``p + t − 1``, and ``V(s_t)`` is read
there too (the state before token ``t``).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from agents.policies.base import Act, Evaluation
from agents.policies.sampler import LMSampler
from textenv.lm import at_completion, completion_batch, sequence_logprobs  # noqa: F401  (sequence_logprobs: re-exported)

VALUE_HEAD = "value_head.safetensors"


class LMPolicy(nn.Module):
    """A causal LM acting token by token, with an optional scalar value head.

    Args:
        model: a ``PreTrainedModel`` with a causal-LM head. Dropout is switched off (PPO's ratio must be 1
            before the first update; TRL and OpenRLHF do the same).
        value_head: add a critic ``Linear(hidden, 1)`` on the last hidden state (PPO); False for REINFORCE,
            RLOO, GRPO, DPO and SFT.
        temperature: sampling temperature while acting (log-probs are taken at the same temperature).
        tokenizer: kept to be saved beside the weights, so a saved policy loads as an env's ``model=``.
    """

    def __init__(self, model, value_head: bool = False, temperature: float = 1.0, tokenizer=None):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature={temperature} must be > 0")
        self.model = model
        self.tokenizer = tokenizer
        self.temperature = float(temperature)
        for module in model.modules():
            if isinstance(module, nn.Dropout):
                module.p = 0.0
        hidden = model.config.get_text_config().hidden_size
        self.value_head = nn.Linear(hidden, 1) if value_head else None
        if self.value_head is not None:
            nn.init.normal_(self.value_head.weight, std=1.0 / (hidden + 1) ** 0.5)
            nn.init.zeros_(self.value_head.bias)
        self._sampler: LMSampler | None = None
        self.generator: torch.Generator | None = None

    # ---------------------------------------------------------------- loading and saving
    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, value_head: bool = False, device="cpu", **kwargs) -> LMPolicy:
        """Load a causal LM (and its tokenizer) by name or path; a ``value_head.safetensors`` beside it is loaded
        into the value head when ``value_head=True``."""
        from textenv.lm import load_causal_lm, load_tokenizer

        policy = cls(load_causal_lm(name_or_path, device), value_head, tokenizer=load_tokenizer(name_or_path), **kwargs)
        head = Path(name_or_path) / VALUE_HEAD
        if value_head and head.is_file():
            policy.value_head.load_state_dict(load_file(head))
        return policy.to(device)

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write the LM in Hugging Face format (loadable by ``AutoModelForCausalLM`` and as an env's ``model=``),
        its tokenizer, and the value head beside them."""
        from textenv.lm import save_pretrained

        path = save_pretrained(self.model, path)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(path)
        if self.value_head is not None:
            save_file({k: v.contiguous() for k, v in self.value_head.state_dict().items()}, path / VALUE_HEAD)
        return path

    @property
    def vocab_size(self) -> int:
        return int(self.model.config.get_text_config().vocab_size)

    # ---------------------------------------------------------------- acting (KV cache)
    def start(self, env) -> None:
        """Prefill every env's prompt after a reset of all envs of the batched text env ``env``."""
        base = env.unwrapped
        if self._sampler is None or self._sampler.base is not base:
            self._sampler = LMSampler(self.model, env, self.temperature, self.generator)
        self._sampler.generator = self.generator
        self._sampler.restart(range(base.num_envs))

    def act(self, obs=None) -> Act:
        """Sample the next token of every env (``obs`` is not read: the KV cache already holds it)."""
        if self._sampler is None:
            raise RuntimeError("LMPolicy.act before start(env): the policy must prefill the prompts first")
        tokens, logprobs = self._sampler.sample()  # (N,), (N, V)
        return Act(tokens, logprobs.gather(1, tokens[:, None]).squeeze(1), None, logprobs)

    def advance(self, actions: torch.Tensor) -> None:
        """Feed the sampled tokens to the cache (finished rows' tokens are fed too and never read again)."""
        self._sampler.lm.step(actions)

    # ---------------------------------------------------------------- learning (teacher forcing)
    def forward(self, **kwargs):
        """The LM's forward (``input_ids``, ``attention_mask``, ...): a policy scores sequences as its LM does
        (:func:`textenv.lm.sequence_logprobs` reads ``.logits`` and divides them by :attr:`temperature`)."""
        return self.model(**kwargs)

    def evaluate(self, batch: dict[str, torch.Tensor], with_values: bool = True, entropy_grad: bool = True) -> Evaluation:
        """Log-probs, entropies and values of the completion tokens, each ``(B, T)``.

        ``batch``: ``input_ids``/``attention_mask`` ``(B, L)`` (prompt + completion, right-padded),
        ``prompt_len`` ``(B,)``, ``actions`` ``(B, T)`` (completion tokens, left-aligned; entries past a
        completion's end are ignored by the caller's mask). ``entropy_grad=False`` keeps the full-vocabulary
        entropy out of the autograd graph (an update without an entropy bonus needs it only as a statistic).
        """
        ids, mask, prompt_len, actions = batch["input_ids"], batch["attention_mask"], batch["prompt_len"], batch["actions"]
        T = actions.shape[1]
        want_values = with_values and self.value_head is not None
        out = self.model(input_ids=ids, attention_mask=mask, output_hidden_states=want_values)
        logits = at_completion(out.logits, prompt_len, T)  # (B, T, V)
        logprobs = torch.log_softmax(logits.float() / self.temperature, -1)  # (B, T, V)
        logprob = logprobs.gather(-1, actions.long()[..., None]).squeeze(-1)  # (B, T)
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            entropy = -(logprobs.exp() * logprobs).sum(-1)  # (B, T)
        value = None
        if want_values:
            hidden = at_completion(out.hidden_states[-1], prompt_len, T)  # (B, T, H), the trunk's last hidden state
            value = self.value_head(hidden.float()).squeeze(-1)  # (B, T)
        return Evaluation(logprob, entropy, value)


def sequence_batch(tokenizer, prompts: list[str], completions: list[str], add_eos: bool = False,
                   max_length: int | None = None) -> dict[str, torch.Tensor]:
    """Tokenize ``prompt + completion`` pairs into the batch :meth:`LMPolicy.evaluate` reads (``mask`` marks the
    completion tokens; with ``add_eos`` the EOS token is appended, so that stopping is learned too).

    Prompt and completion are tokenized separately, as the env does (a prompt's tokens are what the policy saw).
    """
    if len(prompts) != len(completions) or not prompts:
        raise ValueError(f"need as many prompts as completions (at least one), got {len(prompts)} and {len(completions)}")
    p_ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    c_ids = tokenizer(list(completions), add_special_tokens=False)["input_ids"]
    if add_eos:
        c_ids = [c + [tokenizer.eos_token_id] for c in c_ids]
    rows = []
    for i, (p, c) in enumerate(zip(p_ids, c_ids)):
        if not p:
            raise ValueError(f"prompt {i} ({prompts[i]!r}) has no tokens")
        if max_length is not None:
            c = c[: max(0, max_length - len(p))]
        if not c:
            raise ValueError(f"completion {i} ({completions[i]!r}) has no tokens (after truncation to max_length={max_length})")
        rows.append((p, c))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return completion_batch([p for p, _ in rows], [c for _, c in rows], pad)
