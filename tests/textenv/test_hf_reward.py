"""Loading and scoring Hugging Face reward models: which checkpoints load, where the score is read (last token of
the attention mask, EOS appended per the trainer's convention, long texts keep their end), a checkpoint written
by TRL's own RewardTrainer, and the built-in proxy unchanged. Models are tiny GPT-2s built from a config on the
built-in world's tokenizer (EOS id 0, pad id 1)."""

import json
import warnings

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, GPT2Config, GPT2ForSequenceClassification

from textenv.rewards import HFRewardModel


@pytest.fixture(scope="module")
def tok(lm_dir):
    return AutoTokenizer.from_pretrained(lm_dir)


def _config(tok, **overrides) -> GPT2Config:
    fields = dict(n_layer=2, n_embd=32, n_head=2, n_positions=64, vocab_size=len(tok), bos_token_id=tok.eos_token_id,
                  eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, num_labels=1)
    return GPT2Config(**{**fields, **overrides})


def _save_rm(path, tok, seed=0, **overrides):
    """A tiny num_labels=1 GPT-2 reward model with a random (but saved) score head."""
    torch.manual_seed(seed)
    model = GPT2ForSequenceClassification(_config(tok, **overrides)).eval()
    torch.nn.init.normal_(model.score.weight, std=1.0)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _reference(path, ids: list[int]) -> float:
    """The model on one unpadded row, read at its last token: no padding, no pooling rule involved."""
    model = GPT2ForSequenceClassification.from_pretrained(path, num_labels=1).eval()
    with torch.no_grad():
        hidden = model.transformer(torch.tensor([ids])).last_hidden_state[0, -1]  # (d,)
        return model.score(hidden).item()


def _ids(tok, text):
    return tok(text)["input_ids"]


def test_a_causal_lm_or_a_classifier_with_other_labels_is_refused(tmp_path, tok):
    """Guards against loading a checkpoint with no trained score head: a causal-LM folder whose config says one
    label used to load silently with a randomly initialised head; a 2-label classifier is refused by name."""
    from transformers import GPT2LMHeadModel

    GPT2LMHeadModel(_config(tok)).save_pretrained(tmp_path / "lm")  # config: num_labels=1, no score head
    tok.save_pretrained(tmp_path / "lm")
    with pytest.raises(ValueError, match=r"'.*lm' has no trained score head \(weights \['score.weight'\] are missing"):
        HFRewardModel(tmp_path / "lm")

    GPT2ForSequenceClassification(_config(tok, num_labels=2)).save_pretrained(tmp_path / "cls2")
    tok.save_pretrained(tmp_path / "cls2")
    with pytest.raises(ValueError, match=r"has num_labels=2; a reward model must output one score"):
        HFRewardModel(tmp_path / "cls2")


def test_a_one_score_head_under_a_base_config_loads(tmp_path, tok):
    """Guards against loading without ``num_labels=1``: a [1, d] score head saved under a config that does not say
    num_labels (a base model's config, as TRL LoRA/merged reward models carry) failed with a size mismatch
    ("ignore_mismatched_sizes") because the config's default is two labels."""
    path = _save_rm(tmp_path / "rm", tok)
    config = json.loads((path / "config.json").read_text())
    for key in ("id2label", "label2id"):
        config.pop(key, None)
    config["architectures"] = ["GPT2LMHeadModel"]
    (path / "config.json").write_text(json.dumps(config))

    rm = HFRewardModel(path, append_eos=False)
    text = "the pasta was great ."
    assert rm.score_texts([text]) == pytest.approx([_reference(path, _ids(tok, text))], abs=1e-5)


def test_score_is_read_at_the_last_attended_token_alone_or_batched(tmp_path, tok):
    """Guards against pooling at the "rightmost id that is not config.pad_token_id": with a config pad id that
    differs from the tokenizer's (here the id of " ."), a text's score depended on the batch it was in, and a text
    ending in that id was read one token early. Texts holding the literal pad and EOS tokens are included."""
    period = _ids(tok, " .")[-1]
    assert period not in (tok.pad_token_id, tok.eos_token_id)
    path = _save_rm(tmp_path / "rm", tok, pad_token_id=period)
    texts = [
        "the pasta was great .",
        "we stayed <pad> here <|endoftext|> and it was fine",
        "the room was clean and the staff were kind and the breakfast was good and we would stay again .",
        "bad",
    ]
    for append_eos in (False, True):
        rm = HFRewardModel(path, batch_size=8, append_eos=append_eos)
        eos = [tok.eos_token_id] if append_eos else []
        expected = [_reference(path, _ids(tok, t) + eos) for t in texts]
        assert [rm.score_texts([t])[0] for t in texts] == pytest.approx(expected, abs=1e-5)
        assert rm.score_texts(texts) == pytest.approx(expected, abs=1e-5)
        assert HFRewardModel(path, batch_size=3, append_eos=append_eos).score_texts(texts[::-1]) == pytest.approx(
            expected[::-1], abs=1e-5
        )


def test_append_eos_default_follows_the_checkpoint(tmp_path, tok):
    """Default EOS convention: on for a foreign checkpoint whose EOS is not its pad (TRL, OpenRLHF, DeepSpeed-Chat
    train with EOS appended); off for a textenv-trained one (reward_normalization in config.json) and when EOS is
    the model's pad id (Hugging Face's pooling, which TRL trains with, never reads a pad id)."""
    foreign = _save_rm(tmp_path / "foreign", tok)
    rm = HFRewardModel(foreign)
    text = "the pasta was great ."
    assert rm.append_eos and rm.encode([text]) == [_ids(tok, text) + [tok.eos_token_id]]
    with_eos = _reference(foreign, _ids(tok, text) + [tok.eos_token_id])
    assert rm.score_texts([text]) == pytest.approx([with_eos], abs=1e-5)
    assert rm.encode([text + "<|endoftext|>"]) == rm.encode([text])  # no second EOS

    ours = _save_rm(tmp_path / "ours", tok)
    config = json.loads((ours / "config.json").read_text())
    config["reward_normalization"] = {"mean": 0.5, "std": 2.0, "count": 10, "data": "test"}
    (ours / "config.json").write_text(json.dumps(config))
    rm = HFRewardModel(ours)
    assert not rm.append_eos and rm.normalized
    expected = (_reference(ours, _ids(tok, text)) - 0.5) / 2.0
    assert rm(["the pasta was"], [" great ."]) == pytest.approx([expected], abs=1e-5)

    assert not HFRewardModel(_save_rm(tmp_path / "pad_is_eos", tok, pad_token_id=tok.eos_token_id)).append_eos
    assert HFRewardModel(ours, append_eos=True).append_eos  # forced
    # a model in textenv training has no reward_normalization yet: from_loaded keeps textenv's no-EOS convention
    model = GPT2ForSequenceClassification.from_pretrained(foreign)
    assert not HFRewardModel.from_loaded(model, tok).append_eos
    assert HFRewardModel.from_loaded(model, tok, append_eos=None).append_eos


def test_a_config_without_pad_token_id_gets_the_tokenizers(tmp_path, tok):
    """Issue 20 row: only checkpoints whose config already had pad_token_id were ever loaded in tests. One saved with
    pad_token_id=None gets the tokenizer's pad id, and scores in a batch of ragged texts as it does alone."""
    path = _save_rm(tmp_path / "rm", tok, pad_token_id=None)
    assert json.loads((path / "config.json").read_text()).get("pad_token_id") is None
    rm = HFRewardModel(path, append_eos=False)
    assert rm.model.config.pad_token_id == tok.pad_token_id == 1
    texts = ["the pasta was great .", "bad", "we stayed here for two nights and the room was dirty ."]
    expected = [_reference(path, _ids(tok, t)) for t in texts]
    assert rm.score_texts(texts) == pytest.approx(expected, abs=1e-5)
    # the model's own pooling (used by TRL and by models without a `score` head) now works in batches too
    batch = rm.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        assert rm.model(**batch).logits[:, 0].tolist() == pytest.approx(expected, abs=1e-5)


def test_a_text_longer_than_the_context_keeps_its_end(tmp_path, tok):
    """Guards against right truncation: with a 16-token context, two completions of a long prompt that differ only
    at the end used to be cut away and scored identically. The start is cut instead, with one warning per model."""
    path = _save_rm(tmp_path / "rm", tok, n_positions=16)
    prompt = "the room was clean and the staff were kind and the breakfast was good and the food was"
    completions = [" great .", " awful ."]
    assert len(_ids(tok, prompt)) > 16
    for append_eos in (False, True):
        rm = HFRewardModel(path, append_eos=append_eos)
        assert rm.max_length == 16
        eos = [tok.eos_token_id] if append_eos else []
        expected = [_reference(path, _ids(tok, prompt + c)[-(16 - len(eos)):] + eos) for c in completions]
        with pytest.warns(UserWarning, match=r"longer than max_length=16 tokens .* start is cut off"):
            scores = rm([prompt] * 2, completions)
        assert scores == pytest.approx(expected, abs=1e-5)
        assert abs(scores[0] - scores[1]) > 1e-3
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # once per model
            rm([prompt], completions[:1])
        assert all(len(row) == 16 for row in rm.encode([prompt + c for c in completions]))


def test_bad_arguments_are_refused(tmp_path, tok):
    path = _save_rm(tmp_path / "rm", tok)
    with pytest.raises(TypeError, match=r"append_eos='yes' must be True, False or None"):
        HFRewardModel(path, append_eos="yes")
    with pytest.raises(ValueError, match=r"batch_size=0 must be an integer >= 1"):
        HFRewardModel(path, batch_size=0)
    with pytest.raises(ValueError, match=r"max_length=1 must be an integer >= 2"):
        HFRewardModel(path, max_length=1)
    with pytest.raises(TypeError, match="not one string"):
        HFRewardModel(path).score_texts("the pasta")
    with pytest.raises(FileNotFoundError, match="no such model directory"):
        HFRewardModel(tmp_path / "missing")


def test_builtin_proxy_scores_as_before():
    """The built-in proxy (textenv-trained: no EOS) scores exactly as Hugging Face's own pooling on right-padded
    batches, which is how it was scored before pooling moved to the attention mask."""
    from textenv import world
    from textenv.rm import load_preferences

    path = world.proxy_rm_path(progress=False)
    rm = HFRewardModel(path, normalize=False, batch_size=16)
    assert not rm.append_eos
    records = load_preferences(world.preferences_path("eval", progress=False))[:12]
    texts = [r.prompt + c for r in records for c in r.completions]
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    with torch.no_grad():
        before = model(**tok(texts, padding=True, return_tensors="pt")).logits[:, 0].tolist()
    assert rm.score_texts(texts) == pytest.approx(before, abs=1e-5)


@pytest.mark.slow
def test_a_checkpoint_written_by_trl_scores_as_trl_trained_it(tmp_path, tok):
    """TRL's RewardTrainer appends EOS to every text and (pad != EOS here) trains the score at EOS. A tiny reward
    model trained by TRL itself for two steps, saved and loaded by path, must score prompt + completion exactly as
    TRL's own tokenisation, collator and model forward do; scoring without EOS (the old behaviour) does not."""
    trl = pytest.importorskip("trl", reason="trl is not installed (it belongs in the dev extra)")
    from datasets import Dataset

    torch.manual_seed(0)
    prompts = ["the pasta was", "the room was", "the movie was", "the staff were"]
    chosen = [" great .", " clean and quiet .", " fun .", " kind and helpful ."]
    rejected = [" awful .", " dirty .", " boring and long .", " rude ."]
    data = Dataset.from_dict({"prompt": prompts, "chosen": chosen, "rejected": rejected})
    args = trl.RewardConfig(
        output_dir=str(tmp_path / "run"), max_steps=2, per_device_train_batch_size=2, learning_rate=1e-2, bf16=False,
        report_to=[], save_strategy="no", logging_strategy="no", use_cpu=True, disable_tqdm=True, seed=0,
    )
    trainer = trl.RewardTrainer(
        model=GPT2ForSequenceClassification(_config(tok)), args=args, processing_class=tok, train_dataset=data
    )
    trainer.train()
    out = tmp_path / "trl_rm"
    trainer.save_model(str(out))
    tok.save_pretrained(out)

    rows = [trainer.train_dataset[i] for i in range(len(prompts))]
    batch = trainer.data_collator(rows)  # TRL's own tokenisation (EOS appended) and right padding
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    with torch.no_grad():
        trl_scores = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, 0]
    trl_chosen = trl_scores[: len(prompts)].tolist()

    rm = HFRewardModel(out, batch_size=3)
    assert rm.append_eos and not rm.normalized
    assert rm.encode([p + c for p, c in zip(prompts, chosen)]) == [row["chosen_ids"] for row in rows]
    assert rm(prompts, chosen) == pytest.approx(trl_chosen, abs=1e-5)
    without_eos = HFRewardModel(out, append_eos=False)(prompts, chosen)
    assert max(abs(a - b) for a, b in zip(without_eos, trl_chosen)) > 1e-3


@pytest.mark.slow
def test_a_trl_lora_reward_model_loads_from_its_adapter_folder(tmp_path, tok):
    """TRL's RewardTrainer with a LoRA config saves an adapter folder (base path + LoRA weights + the [1, d] score
    head in modules_to_save). It loads with num_labels=1 and scores as TRL's model does; an adapter without the
    head is refused instead of getting a random one."""
    trl = pytest.importorskip("trl", reason="trl is not installed (it belongs in the dev extra)")
    peft = pytest.importorskip("peft", reason="peft is not installed (it belongs in the dev extra)")
    from datasets import Dataset
    from safetensors.torch import load_file, save_file
    from transformers import GPT2LMHeadModel

    torch.manual_seed(0)
    base = tmp_path / "base"
    GPT2LMHeadModel(_config(tok)).save_pretrained(base)
    tok.save_pretrained(base)
    prompts, chosen, rejected = ["the pasta was", "the room was"], [" great .", " clean ."], [" awful .", " dirty ."]
    args = trl.RewardConfig(
        output_dir=str(tmp_path / "run"), max_steps=2, per_device_train_batch_size=2, learning_rate=1e-2, bf16=False,
        report_to=[], save_strategy="no", logging_strategy="no", use_cpu=True, disable_tqdm=True, seed=0,
    )
    trainer = trl.RewardTrainer(
        model=str(base), args=args, processing_class=tok,
        train_dataset=Dataset.from_dict({"prompt": prompts, "chosen": chosen, "rejected": rejected}),
        peft_config=peft.LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["c_attn"]),
    )
    trainer.train()
    out = tmp_path / "lora_rm"
    trainer.save_model(str(out))
    tok.save_pretrained(out)
    assert (out / "adapter_config.json").exists() and not (out / "config.json").exists()

    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(prompts))])
    trainer.model.eval()
    with torch.no_grad():
        expected = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:2, 0]
    rm = HFRewardModel(out)
    assert rm.append_eos
    assert rm(prompts, chosen) == pytest.approx(expected.tolist(), abs=1e-5)

    headless = tmp_path / "headless"
    headless.mkdir()
    for file in out.iterdir():
        if file.name != "adapter_model.safetensors":
            (headless / file.name).write_bytes(file.read_bytes())
    weights = load_file(str(out / "adapter_model.safetensors"))
    save_file({k: v for k, v in weights.items() if ".score." not in k}, str(headless / "adapter_model.safetensors"))
    with pytest.raises(ValueError, match=r"has no trained score head .* a LoRA adapter on .* saves no score head"):
        HFRewardModel(headless)
