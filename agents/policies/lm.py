"""The LM policy: any Hugging Face causal LM plus a value head on its last hidden state (one shared trunk).

Acting uses the LM's own KV cache (:class:`agents.policies.sampler.LMSampler`): one ``(N, 1)`` forward per token for
the whole batch. Learning uses one teacher-forced forward per sequence: :meth:`LMPolicy.evaluate` reads the
log-probability, entropy and value of every completion token from a single pass over ``prompt + completion``.

Sequences are laid out as the text env's observations are: prompt then completion, right-padded. The token at
position ``p + t`` (``p`` = prompt length) is predicted from position ``p + t − 1``, and ``V(s_t)`` is read
there too (the state before token ``t``).

**LoRA** (:class:`LoRASettings`, ``lora_r > 0``): the LM is wrapped by ``peft.get_peft_model`` and only the adapter
(and the value head, which reads the adapted trunk's last hidden state) trains; the base weights stay as loaded.
:meth:`LMPolicy.reference_model` is then the base itself, computed by the same module with the adapter switched
off, so a KL reference costs no second copy of the weights; a saved LoRA policy is an adapter folder
(``adapter_config.json`` + ``adapter_model.safetensors``, tokenizer, value head), which loads as an env's
``model=`` and back as a LoRA policy.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from agents.core.run import check_range
from agents.policies.base import Act, Evaluation
from agents.policies.sampler import LMSampler
from textenv.lm import at_completion, completion_batch, sequence_logprobs  # noqa: F401  (sequence_logprobs: re-exported)

VALUE_HEAD = "value_head.safetensors"


@dataclass
class LoRASettings:
    """LoRA fields of a text trainer's config (PPO, REINFORCE/RLOO/GRPO, SFT, DPO): ``lora_r=0`` trains every weight;
    and ``gradient_checkpointing``, the other memory setting of the update.

    Hu et al. 2021, "LoRA": a frozen weight ``W`` gets a trainable low-rank update, ``W + (α/r)·B·A`` with
    ``B`` ``(out, r)`` initialised to 0, so training starts exactly at the loaded model.
    """

    lora_r: int = 0
    """LoRA rank r (0: full fine-tuning; > 0: train low-rank adapters only, the KL reference is the base with them off)."""
    lora_alpha: float = 16.0
    """LoRA α: the adapter's update B·A is scaled by α / r."""
    lora_dropout: float = 0.0
    """Dropout on the adapters' input while training (SFT and DPO only; on-policy training needs 0)."""
    lora_target_modules: tuple[str, ...] = ("all-linear",)
    """Names of the modules that get adapters (e.g. c_attn or q_proj,v_proj); all-linear: every linear layer but the LM head."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass instead of keeping them (less memory; the forward runs twice)."""

    def check_lora(self, on_policy: bool = False, text: bool = True) -> None:
        """Validate the LoRA fields (a config's ``__post_init__`` calls it); ``on_policy`` refuses dropout, which
        would make PPO's ratio differ from 1 before the first update and the samples come from another policy;
        ``text=False`` (an MLP policy's env) refuses LoRA."""
        check_range("lora_r", self.lora_r, 0, integer=True)
        if self.lora_r and not text:
            raise ValueError(f"lora_r={self.lora_r!r}: LoRA adapts a language model; this env's policy is an MLP "
                             f"(set lora_r=0)")
        check_range("lora_alpha", self.lora_alpha, 0, low_open=True)
        check_range("lora_dropout", self.lora_dropout, 0)
        if not self.lora_dropout < 1:
            raise ValueError(f"lora_dropout={self.lora_dropout!r} is out of range; expected a number >= 0 and < 1")
        if on_policy and self.lora_dropout:
            raise ValueError(f"lora_dropout={self.lora_dropout!r}: on-policy training needs 0 (the policy that samples "
                             f"must be the one scored, and PPO's ratio must be 1 before the first update)")
        targets = self.lora_target_modules
        if isinstance(targets, str) or not isinstance(targets, (tuple, list)) or not targets or not all(
                isinstance(t, str) and t.strip() for t in targets):
            raise ValueError(f"lora_target_modules={targets!r} must be a non-empty tuple of module names "
                             f"(or ('all-linear',))")
        if not isinstance(self.gradient_checkpointing, bool):
            raise ValueError(f"gradient_checkpointing={self.gradient_checkpointing!r} must be True or False")
        if "all-linear" in targets and len(targets) > 1:
            raise ValueError(f"lora_target_modules={targets!r}: 'all-linear' stands alone (it means every linear layer)")
        self.lora_target_modules = tuple(targets)

    @property
    def lora(self) -> LoRASettings | None:
        """These settings when LoRA is on (``lora_r > 0``), else None."""
        return self if self.lora_r > 0 else None

    def peft_config(self):
        """The ``peft.LoraConfig`` of these settings (needs ``peft``)."""
        from textenv.lm import require_peft

        peft = require_peft("LoRA (lora_r > 0)")
        targets = self.lora_target_modules
        return peft.LoraConfig(r=int(self.lora_r), lora_alpha=self.lora_alpha, lora_dropout=float(self.lora_dropout),
                               target_modules="all-linear" if targets == ("all-linear",) else list(targets),
                               bias="none", task_type="CAUSAL_LM")


class AdapterOff(nn.Module):
    """The base model of a LoRA (peft) model: its forward is the peft model's with the adapter disabled.

    It shares every weight with the policy (its ``parameters()`` are the peft model's, adapter included), so it is
    exact (the LoRA layers return their base layer's output unchanged) and costs no memory. Whoever holds it must
    **not** set ``requires_grad`` on its parameters nor switch its train/eval mode expecting the policy to be
    unaffected: they are the policy's. ``.config`` is the base's config (what a KL reference and
    :class:`textenv.lm.IncrementalLM` read).
    """

    def __init__(self, peft_model):
        super().__init__()
        self.peft_model = peft_model

    @property
    def config(self):
        """The base model's config."""
        return self.peft_model.config

    def forward(self, *args, **kwargs):
        """The base model's outputs for the peft model's arguments (``input_ids``, ``attention_mask``, cache, ...)."""
        with self.peft_model.disable_adapter():
            return self.peft_model(*args, **kwargs)


class LMPolicy(nn.Module):
    """A causal LM acting token by token, with an optional scalar value head.

    Args:
        model: a ``PreTrainedModel`` with a causal-LM head. Dropout is switched off (PPO's ratio must be 1
            before the first update; TRL and OpenRLHF do the same).
        value_head: add a critic ``Linear(hidden, 1)`` on the last hidden state (PPO); False for REINFORCE,
            RLOO, GRPO, DPO and SFT.
        temperature: sampling temperature while acting (log-probs are taken at the same temperature).
        tokenizer: kept to be saved beside the weights, so a saved policy loads as an env's ``model=``.
        lora: wrap ``model`` with a fresh LoRA adapter (``peft.get_peft_model``) when ``lora.lora_r > 0``: only
            the adapter and the value head train. A ``model`` that already is a peft model is taken as it is
            (a LoRA policy continuing its adapter); ``lora`` must then be None.

        gradient_checkpointing: recompute each layer's activations during the backward pass of :meth:`evaluate`
            (Hugging Face's ``activation_checkpointing_enable``, non-reentrant) instead of keeping them: the memory
            of the update's activations falls to about one layer's, for a second forward. The model is switched to
            train mode for that forward only (Hugging Face checkpoints only then); with dropout off, its outputs
            are the eval-mode ones.

    The model's own dropout is switched off; LoRA's ``lora_dropout`` acts only while the model is in train mode
    (the supervised trainers set it; a model loaded by :meth:`from_pretrained` is in eval mode).
    """

    def __init__(self, model, value_head: bool = False, temperature: float = 1.0, tokenizer=None,
                 lora: LoRASettings | None = None, gradient_checkpointing: bool = False):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature={temperature} must be > 0")
        for name, module in model.named_modules():
            if isinstance(module, nn.Dropout) and ".lora_dropout." not in f".{name}.":  # a loaded adapter's: kept
                module.p = 0.0
        if lora is not None and lora.lora_r > 0:
            if _is_peft(model):
                raise ValueError("LMPolicy got a model that already carries a LoRA adapter, and lora settings for a "
                                 "new one; pass lora=None to train that adapter, or merge it first "
                                 "(textenv.lm.load_causal_lm merges an adapter folder into its base)")
            peft_config = lora.peft_config()  # an ImportError that says to install peft, where it is missing
            from peft import get_peft_model

            source, training = getattr(model, "name_or_path", None), model.training
            with warnings.catch_warnings():  # GPT-2's Conv1D layers: peft sets fan_in_fan_out itself, and says so
                warnings.filterwarnings("ignore", "fan_in_fan_out is set to False", UserWarning)
                try:
                    model = get_peft_model(model, peft_config).train(training)  # new LoRA modules: the model's mode
                except ValueError as error:  # peft: no module of the model matches the target names
                    linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)
                                     or type(m).__name__ == "Conv1D"})
                    raise ValueError(f"lora_target_modules={lora.lora_target_modules!r} does not fit "
                                     f"{type(model).__name__}: {' '.join(str(error).split())}; its linear layers are "
                                     f"named {linear} (or use all-linear)") from None
            if source:  # the adapter's base is the model as loaded (an adapter folder merged: that folder)
                local = Path(source)
                model.peft_config["default"].base_model_name_or_path = str(local.resolve()) if local.exists() else source
        self.model = model
        self.tokenizer = tokenizer
        self.temperature = float(temperature)
        hidden = model.config.get_text_config().hidden_size
        self.value_head = nn.Linear(hidden, 1) if value_head else None
        if self.value_head is not None:
            nn.init.normal_(self.value_head.weight, std=1.0 / (hidden + 1) ** 0.5)
            nn.init.zeros_(self.value_head.bias)
        self._sampler: LMSampler | None = None
        self.generator: torch.Generator | None = None
        self._head_on_completion: bool | None = None  # the LM head applied at completion positions only (checked once)
        self.gradient_checkpointing = bool(gradient_checkpointing)
        if self.gradient_checkpointing:  # transformers 5 renamed it; 4.x has the old name only
            if hasattr(model, "activation_checkpointing_enable"):
                model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    # ---------------------------------------------------------------- loading and saving
    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, value_head: bool = False, device="cpu",
                        lora: LoRASettings | None = None, **kwargs) -> LMPolicy:
        """Load a causal LM (and its tokenizer) by name or path; a ``value_head.safetensors`` beside it is loaded
        into the value head when ``value_head=True``.

        A PEFT adapter folder (what :meth:`save_pretrained` writes for a LoRA policy) loads, with ``lora=None``,
        as a LoRA policy on its base that continues training that adapter. With ``lora`` given, the folder is
        the starting model: an adapter folder is merged into its base, then ``lora_r > 0`` wraps it in a fresh
        adapter (its reference, the adapter off, is that starting model) and ``lora_r = 0`` trains every weight.
        """
        from textenv.lm import adapter_base, load_adapter, load_causal_lm, load_tokenizer

        base = adapter_base(name_or_path)
        if base is not None and lora is None:
            model = load_adapter(load_causal_lm(base, device), name_or_path, is_trainable=True).eval()
        else:
            model = load_causal_lm(name_or_path, device)
        policy = cls(model, value_head, tokenizer=load_tokenizer(name_or_path), lora=lora, **kwargs)
        head = Path(name_or_path) / VALUE_HEAD
        if value_head and head.is_file():
            policy.value_head.load_state_dict(load_file(head))
        return policy.to(device)

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write the LM in Hugging Face format (loadable by ``AutoModelForCausalLM`` and as an env's ``model=``),
        its tokenizer, and the value head beside them. A LoRA policy writes its adapter only
        (``adapter_config.json`` naming the base, ``adapter_model.safetensors``): the folder loads as an env's
        ``model=`` (the adapter merged) and, through :meth:`from_pretrained`, back into a LoRA policy."""
        from textenv.lm import save_pretrained

        with warnings.catch_warnings():  # peft looks for a config.json in the base to compare vocabularies; an
            # adapter on an adapter folder (a LoRA run started from one) has none there, and the vocabulary is the same
            warnings.filterwarnings("ignore", "Could not find a config file in", UserWarning)
            path = save_pretrained(self.model, path)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(path)
        if self.value_head is not None:
            save_file({k: v.contiguous() for k, v in self.value_head.state_dict().items()}, path / VALUE_HEAD)
        return path

    # ---------------------------------------------------------------- LoRA
    @property
    def is_lora(self) -> bool:
        """True when the LM carries a LoRA (peft) adapter."""
        return _is_peft(self.model)

    def reference_model(self) -> nn.Module | None:
        """The base model with the adapter off (:class:`AdapterOff`, sharing the policy's weights) for a LoRA
        policy: a KL reference that costs no second copy; None without LoRA (the caller loads a copy).

        Do not set ``requires_grad`` on its parameters: they are the policy's."""
        return AdapterOff(self.model) if self.is_lora else None

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
        """Feed the sampled tokens (and a multi-turn env's reply after them) to the cache (finished rows' tokens are
        fed too and never read again)."""
        self._sampler.feed(actions)

    # ---------------------------------------------------------------- learning (teacher forcing)
    def forward(self, **kwargs):
        """The LM's forward (``input_ids``, ``attention_mask``, ...): a policy scores sequences as its LM does
        (:func:`textenv.lm.sequence_logprobs` reads ``.logits`` and divides them by :attr:`temperature`)."""
        return self.model(**kwargs)

    def evaluate(self, batch: dict[str, torch.Tensor], with_values: bool = True, entropy_grad: bool = True) -> Evaluation:
        """Log-probs, entropies and values of the completion tokens, each ``(B, T)``.

        ``batch``: ``input_ids``/``attention_mask`` ``(B, L)`` (prompt + completion, right-padded),
        ``prompt_len`` ``(B,)``, ``actions`` ``(B, T)`` (completion tokens, left-aligned; entries past a
        completion's end are ignored by the caller's mask), and for a multi-turn env ``positions`` ``(B, T)``: where
        each action stands after the prompt (the env's tokens in between are context, never scored). ``entropy_grad=False`` keeps the full-vocabulary
        entropy out of the autograd graph (an update without an entropy bonus needs it only as a statistic).
        """
        ids, mask, prompt_len, actions = batch["input_ids"], batch["attention_mask"], batch["prompt_len"], batch["actions"]
        T, positions = actions.shape[1], batch.get("positions")
        want_values = with_values and self.value_head is not None
        recompute = self.gradient_checkpointing and torch.is_grad_enabled() and not self.model.training
        if recompute:  # Hugging Face checkpoints layers in train mode only; dropout is off, so outputs are unchanged
            self.model.train()
        try:
            logits, last_hidden = self._completion_logits(ids, mask, prompt_len, T, want_values, positions)  # (B, T, V)
        finally:
            if recompute:
                self.model.eval()
        logprobs = torch.log_softmax(logits.float() / self.temperature, -1)  # (B, T, V)
        logprob = logprobs.gather(-1, actions.long()[..., None]).squeeze(-1)  # (B, T)
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            entropy = -(logprobs.exp() * logprobs).sum(-1)  # (B, T)
        value = None
        if want_values:
            hidden = at_actions(last_hidden, prompt_len, T, positions)  # (B, T, H), the trunk's last hidden state
            value = self.value_head(hidden.float()).squeeze(-1)  # (B, T)
        return Evaluation(logprob, entropy, value)

    def _completion_logits(self, ids, mask, prompt_len, T: int, want_hidden: bool, positions=None):
        """Logits where the completion tokens are predicted, ``(B, T, V)``, and (``want_hidden``) the trunk's last
        hidden state ``(B, L, H)``.

        The LM head runs on those ``T`` positions only, not on the prompt's (whose logits no loss reads; with a
        49,152-word vocabulary the head is a fifth of a small model's update): the trunk's last hidden state comes
        from a forward with ``logits_to_keep=1`` and the head is applied where needed. On the first call that is
        checked against the model's own last-position logits; a model whose head is more than its output
        embedding (logit soft-capping, scaling) fails the check and gets full logits from then on.
        """
        if self._head_on_completion is not False:
            try:
                out = self.model(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False,
                                 logits_to_keep=1)
            except TypeError:  # a model without logits_to_keep
                self._head_on_completion = False
            else:
                hidden, head = out.hidden_states[-1], self.model.get_output_embeddings()
                if self._head_on_completion is None:
                    with torch.no_grad():
                        self._head_on_completion = head is not None and torch.allclose(
                            head(hidden[:, -1:]).float(), out.logits[:, -1:].float(), rtol=1e-4, atol=1e-4)
                if self._head_on_completion:
                    return head(at_actions(hidden, prompt_len, T, positions)), hidden
        out = self.model(input_ids=ids, attention_mask=mask, output_hidden_states=want_hidden, use_cache=False)
        return at_actions(out.logits, prompt_len, T, positions), (out.hidden_states[-1] if want_hidden else None)


def at_actions(x: torch.Tensor, prompt_len: torch.Tensor, T: int, positions: torch.Tensor | None = None) -> torch.Tensor:
    """``x`` ``(B, L, D)`` read where each of the ``T`` actions is predicted, ``(B, T, D)``: position
    ``prompt_len − 1 + positions[:, t]``, ``positions`` the actions' offsets after the prompt (a multi-turn env's
    inserted tokens are skipped); None: ``0 … T−1`` (:func:`textenv.lm.at_completion`).

    >>> x = torch.arange(6.0).view(1, 6, 1)  # prompt of 2, then agent, env, env, agent
    >>> at_actions(x, torch.tensor([2]), 2, torch.tensor([[0, 3]])).flatten().tolist()
    [1.0, 4.0]
    """
    if positions is None:
        return at_completion(x, prompt_len, T)
    B, L, D = x.shape
    index = (prompt_len.view(-1, 1).to(x.device) - 1 + positions.to(x.device)).clamp(0, L - 1)  # (B, T)
    return x.gather(1, index[..., None].expand(B, T, D))


def _is_peft(model) -> bool:
    """A peft model (duck-typed: peft need not be installed for a policy without LoRA)."""
    return hasattr(model, "peft_config") and hasattr(model, "disable_adapter")


def load_policy(source: str | os.PathLike, lora: LoRASettings | None, checkpoint: bool = False,
                seed: int | None = None, **kwargs) -> LMPolicy:
    """The policy a text trainer trains: ``source`` as its config's starting model (``lora_r > 0``: with a fresh
    adapter), or, with ``checkpoint``, the policy a run with these settings saved (a LoRA run's adapter continues).
    ``seed`` seeds torch first (a fresh adapter's ``A`` and a value head are drawn from it); ``kwargs`` go to
    :meth:`LMPolicy.from_pretrained`."""
    if seed is not None:
        torch.manual_seed(seed)
    if checkpoint and lora is not None and lora.lora_r > 0:
        return LMPolicy.from_pretrained(source, **kwargs)
    return LMPolicy.from_pretrained(source, lora=lora or LoRASettings(), **kwargs)


def sequence_batch(tokenizer, prompts: list[str], completions: list[str], add_eos: bool = False,
                   max_length: int | None = None, chat_template: bool | None = None) -> dict[str, torch.Tensor]:
    """Tokenize ``prompt + completion`` pairs into the batch :meth:`LMPolicy.evaluate` reads (``mask`` marks the
    completion tokens; with ``add_eos`` the token that ends an episode is appended, so that stopping is learned
    too: the chat template's end of turn, else EOS).

    Prompt and completion are tokenized separately, as the env does (a prompt's tokens are what the policy saw):
    with ``chat_template`` (None: when the tokenizer has one, the env's default) the prompt is rendered as a user
    turn (:func:`textenv.task.prompt_token_ids`).
    """
    from textenv.task import end_of_turn_ids, prompt_token_ids, uses_chat_template

    if len(prompts) != len(completions) or not prompts:
        raise ValueError(f"need as many prompts as completions (at least one), got {len(prompts)} and {len(completions)}")
    chat = uses_chat_template(tokenizer, chat_template)
    p_ids = [prompt_token_ids(tokenizer, p, chat) for p in prompts]
    c_ids = tokenizer(list(completions), add_special_tokens=False)["input_ids"]
    if add_eos:
        stop = (end_of_turn_ids(tokenizer) if chat else ()) or (tokenizer.eos_token_id,)
        c_ids = [c + [stop[0]] for c in c_ids]
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
