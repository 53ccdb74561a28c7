"""Tests written to kill the mutants of ``textenv/lm.py`` that survived ``benchmarks/mutation.py`` (see
benchmarks/results/mutation.md).

Each test names, in its docstring, the mutation it guards against and why the test catches it; expected values are
worked out by hand in the comments or come from an independent computation.
"""

from __future__ import annotations

import re

import pytest
import torch
from transformers import AutoTokenizer

from textenv import lm


class _Loader:
    """A stand-in for a transformers ``Auto*`` class: found only on "the hub" (not in local files)."""

    calls: list = []

    @classmethod
    def from_pretrained(cls, name, **kwargs):
        cls.calls.append((name, kwargs))
        if kwargs.get("local_files_only"):
            raise OSError("not in local files")
        return "from the hub"


@pytest.mark.parametrize("name", ["./no-such-model", "/no-such-model", "~/no-such-model", "no/such/model"])
def test_a_path_that_does_not_exist_fails_as_a_missing_directory(name):
    """A mutant that stops recognising a path (a misspelt ``"."``, ``"/"`` or ``"~"`` prefix, ``and`` for ``or``,
    more than two slashes, counting another string) takes it for a hub id — caught because each of these names
    must fail as ``no such model directory``, not as a hub id."""
    with pytest.raises(FileNotFoundError, match=rf"^cannot load thing from '{re.escape(name)}': no such model directory"):
        lm.load_pretrained(_Loader, name, "thing")


@pytest.mark.parametrize(("offline", "goes_to_the_hub"), [
    (None, True), ("0", True), ("", True), ("false", True), ("False", True), ("1", False), ("true", False)])
def test_hf_hub_offline_is_read_as_transformers_reads_it(monkeypatch, offline, goes_to_the_hub):
    """A mutant of the ``HF_HUB_OFFLINE`` check (another default, another variable, a misspelt or re-cased
    "off" value) — caught because unset, ``0``, empty, ``false`` and ``False`` must try the hub (with the caller's
    keyword arguments, after a local-files-only try), and ``1`` or ``true`` must fail at once naming the id."""
    if offline is None:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    else:
        monkeypatch.setenv("HF_HUB_OFFLINE", offline)
    _Loader.calls = []
    if goes_to_the_hub:
        assert lm.load_pretrained(_Loader, "owner/model", "thing", num_labels=1) == "from the hub"
        assert _Loader.calls == [("owner/model", {"local_files_only": True, "num_labels": 1}),
                                 ("owner/model", {"num_labels": 1})]
    else:
        with pytest.raises(FileNotFoundError, match=r"^cannot load thing 'owner/model': it is not a local directory"):
            lm.load_pretrained(_Loader, "owner/model", "thing")


def test_pad_batch_of_nothing_and_on_another_device():
    """A mutant that pads an empty batch to width 1 (``default=1``) or fails on it (``None``, no default), or
    builds the batch on the default device (``device=None`` or dropped) — caught because no sequences give two
    ``(0, 0)`` tensors, and ``device="meta"`` must put both tensors there."""
    ids, mask = lm.pad_batch([], pad_id=0)
    assert ids.shape == mask.shape == (0, 0)
    ids, mask = lm.pad_batch([[1, 2], [3]], pad_id=0, device="meta")
    assert ids.device.type == mask.device.type == "meta"


def test_at_completion_reads_the_predicting_positions_clamped_to_the_last_column():
    """A mutant that clamps to ``L − 2``, or builds the positions on the CPU whatever ``x``'s device (``device=None``,
    dropped, ``prompt_len`` moved to ``None``) — caught because with ``L = 4``, a 3-token prompt and ``T = 3`` the
    positions read must be 2, 3 and 3 (the last column, clamped), and logits on another device (``meta``) must work.
    """
    x = torch.arange(4.0).view(1, 4, 1)  # (B, L, D): the value is the position
    assert lm.at_completion(x, torch.tensor([3]), 3).flatten().tolist() == [2.0, 3.0, 3.0]
    assert lm.at_completion(torch.zeros(1, 4, 2, device="meta"), torch.tensor([3]), 3).device.type == "meta"


class _MetaLM:
    """A model whose logits live on another device (``meta``) than the batch (the CPU)."""

    def __call__(self, input_ids, attention_mask):
        return type("Out", (), {"logits": torch.zeros(*input_ids.shape, 7, device="meta")})()


def test_sequence_logprobs_moves_actions_and_mask_to_the_logits_device():
    """A mutant that leaves the actions or the mask on their own device (``.to(None)``) — caught because a model
    whose logits are on ``meta`` must give a result there rather than a device error."""
    batch = lm.completion_batch([[1, 2], [3]], [[4], [5, 6]], pad_id=0)
    assert lm.sequence_logprobs(_MetaLM(), batch).device.type == "meta"


def test_adapter_base_and_chain_refuse_damaged_or_looping_configs_by_name(tmp_path):
    """A mutant of the adapter-folder checks: ``config.json`` looked up under another name (a model folder holding
    a stray ``adapter_config.json`` read as an adapter), the damaged-JSON message dropped, a non-string base let
    through (``and`` for ``or``), a loop reported only after 33 folders (``and``) — caught by these exact results."""
    import json

    def folder(name, config=None, text=None, model=False):
        path = tmp_path / name
        path.mkdir()
        if config is not None or text is not None:
            (path / "adapter_config.json").write_text(text if text is not None else json.dumps(config))
        if model:
            (path / "config.json").write_text("{}")
        return path

    assert lm.adapter_base(folder("model", {"base_model_name_or_path": "gpt2"}, model=True)) is None
    damaged = folder("damaged", text="{not json")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(damaged))}/adapter_config\.json is not a JSON object; is "
                                         r"the adapter folder damaged\?$"):
        lm.adapter_base(damaged)
    with pytest.raises(ValueError, match=r"adapter_config\.json names no base_model_name_or_path; a PEFT adapter "
                                         r"folder loads on the base model it names there$"):
        lm.adapter_base(folder("number", {"base_model_name_or_path": 5}))
    a, b = tmp_path / "a", tmp_path / "b"
    folder("a", {"base_model_name_or_path": str(b)}), folder("b", {"base_model_name_or_path": str(a)})
    with pytest.raises(ValueError, match=rf"^PEFT adapter folders \['{re.escape(str(a))}', '{re.escape(str(b))}'\] "
                                         rf"name each other as base_model_name_or_path in a loop \(via "):
        lm.adapter_chain(a)


def test_an_adapter_chain_may_be_32_folders_deep_and_no_deeper(tmp_path):
    """A mutant that refuses a chain of 32 adapters (``>= 32``) or allows 33 (``> 33``) — caught because adapters
    stacked 32 deep on a model must resolve, and 33 deep must be refused as a loop would be."""
    import json

    bottom = tmp_path / "model"
    bottom.mkdir()
    (bottom / "config.json").write_text("{}")
    below = bottom
    for i in range(33):
        folder = tmp_path / f"adapter-{i}"
        folder.mkdir()
        (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(below)}))
        below = folder
    adapters, base = lm.adapter_chain(tmp_path / "adapter-31")
    assert len(adapters) == 32 and base == str(bottom)
    with pytest.raises(ValueError, match=r"in a loop"):
        lm.adapter_chain(tmp_path / "adapter-32")


def test_missing_peft_and_missing_folders_are_named_in_the_errors(tmp_path, monkeypatch):
    """A mutant that names ``None`` instead of the adapter, or changes what a loader says it loads (the default
    ``"model config"``, ``"tokenizer"``, ``"causal LM"``) — caught by these exact messages."""
    import sys

    missing = tmp_path / "missing"
    for load, what in ((lm.load_config, "model config"), (lm.load_tokenizer, "tokenizer"),
                       (lm.load_causal_lm, "causal LM")):
        with pytest.raises(FileNotFoundError, match=rf"^cannot load {what} from '{re.escape(str(missing))}': no such"):
            load(missing)
    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(ImportError, match=r"^'my-adapter' needs the `peft` package \(LoRA adapters\), which is not "
                                          r"installed; `pip install peft`"):
        lm.require_peft("my-adapter")
    with pytest.raises(ImportError, match=r"^'some/adapter' needs the `peft` package"):
        lm.load_adapter(torch.nn.Linear(1, 1), "some/adapter")


def test_load_tokenizer_keeps_a_pad_gives_eos_where_none_and_refuses_no_eos(lm_dir, tmp_path):
    """A mutant that replaces every tokenizer's pad with EOS (``is not None``), sets the pad to ``None``, or drops
    or garbles the no-EOS refusal — caught because the built-in tokenizer keeps ``<pad>``, one saved without a pad
    gets EOS as pad, and one without EOS is refused naming its folder."""
    assert lm.load_tokenizer(lm_dir).pad_token == "<pad>"
    tokenizer = AutoTokenizer.from_pretrained(lm_dir)
    tokenizer.pad_token = None
    tokenizer.save_pretrained(tmp_path / "no-pad")
    loaded = lm.load_tokenizer(tmp_path / "no-pad")
    assert loaded.pad_token == loaded.eos_token == "<|endoftext|>"
    tokenizer = AutoTokenizer.from_pretrained(lm_dir)
    tokenizer.eos_token = None
    tokenizer.save_pretrained(tmp_path / "no-eos")
    with pytest.raises(ValueError, match=rf"^tokenizer of '{re.escape(str(tmp_path / 'no-eos'))}' has no EOS token; a "
                                         r"text env needs one to end episodes$"):
        lm.load_tokenizer(tmp_path / "no-eos")


def test_a_merged_adapter_is_named_after_its_folder_and_load_adapter_is_frozen_unless_asked(tiny_lm, tmp_path):
    """A mutant that names the merged model ``None``/``'None'``, makes ``load_adapter`` trainable by default
    (``is_trainable=True``), or drops the caller's ``is_trainable`` — caught because ``load_causal_lm(adapter)``
    must be named after the adapter folder (a LoRA run started from it names it as its base), and the adapter's
    weights must be frozen by default and trainable when asked."""
    from transformers import AutoModelForCausalLM

    peft = pytest.importorskip("peft")
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], fan_in_fan_out=True)
    peft.get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_lm), config).save_pretrained(tmp_path / "adapter")
    assert lm.load_causal_lm(tmp_path / "adapter").name_or_path == str(tmp_path / "adapter")
    for trainable in (False, True):
        kwargs = {"is_trainable": True} if trainable else {}
        peft_model = lm.load_adapter(AutoModelForCausalLM.from_pretrained(tiny_lm), tmp_path / "adapter", **kwargs)
        lora = [p.requires_grad for n, p in peft_model.named_parameters() if "lora_" in n]
        assert lora and all(r == trainable for r in lora), trainable


def test_context_length_reads_each_field_of_a_config_or_a_model():
    """A mutant that misspells one of the fields, reads ``None`` for a bare config (no ``.config``), or needs a value
    above 1 — caught because each field alone must be read, from a config or from a model holding it, and any
    positive integer counts."""
    from types import SimpleNamespace

    for field in ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"):
        config = SimpleNamespace(**{field: 7})
        assert lm.context_length(config) == 7 and lm.context_length(SimpleNamespace(config=config)) == 7, field
    assert lm.context_length(SimpleNamespace(n_positions=1)) == 1
    assert lm.context_length(SimpleNamespace(n_positions=0, n_ctx=5)) == 5


def test_incremental_lm_clamps_positions_past_its_context():
    """A mutant that forgets ``max_positions`` (``None``) or clamps it wrongly (never, ``max + 1``, ``max − 2``)
    — caught because a row stepped past a 6-position model's context (a frozen row fed padding) must be fed
    position 5, the last, and the step must not fail."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=11, n_positions=6, n_embd=8, n_layer=1, n_head=2)).eval()
    inc = lm.IncrementalLM(model, 1, pad_token_id=0, max_positions=6)
    inc.reset_rows([0], [[1, 2, 3, 4, 5]])
    for _ in range(3):  # positions 5, 6, 7: the last two are past the context
        assert inc._step_positions().tolist() == [[min(int(inc.positions[0]), 5)]]
        inc.step(torch.tensor([1]))
    assert inc._step_positions().tolist() == [[5]]


def test_a_cache_that_is_not_a_plain_dynamic_cache_is_refused_naming_its_layers():
    """A mutant that refuses only when both checks fail (``and``), or garbles the message (the cache's or the
    layers' type names, ``getattr`` of the layers with another name, object or default) — caught because an object
    without layers and a cache of foreign layers must both be refused with exactly this message."""
    from types import SimpleNamespace

    with pytest.raises(NotImplementedError, match=r"^IncrementalLM needs a model whose cache is a plain DynamicCache "
                                                  r"\(full attention\); got object with layers \[\]$"):
        lm._check_dynamic(object())
    with pytest.raises(NotImplementedError, match=r"; got SimpleNamespace with layers \['object'\]$"):
        lm._check_dynamic(SimpleNamespace(layers=[object()]))


