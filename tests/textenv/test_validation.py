"""Bad arguments of the text envs fail at ``make``, naming the value and what was expected (issue 12 §5)."""

import gymnasium as gym
import numpy as np
import pytest

import textenv  # noqa: F401
from textenv import TextTask, world
from textenv.env import TextGenerationEnv

ID = "textenv/Sentiment-v1"


def _zero(prompts, completions):
    return [0.0] * len(prompts)


def make(**kwargs):
    """``gym.make(ID, ...)`` with a plain reward, so that no test waits on the built-in proxy reward model."""
    return gym.make(ID, **{"reward_model": _zero, **kwargs})


@pytest.mark.parametrize("kl_coef", [float("nan"), float("inf"), -0.1, "0.1", True])
def test_kl_coef_must_be_a_finite_number_at_least_zero(kl_coef):
    """Regression: ``kl_coef=NaN`` was accepted and silently dropped the KL wrapper (``NaN > 0`` is False)."""
    with pytest.raises(ValueError, match=r"kl_coef=.* must be a finite number >= 0"):
        make(kl_coef=kl_coef)
    with pytest.raises(ValueError, match=r"kl_coef=.* must be a finite number >= 0"):
        gym.make_vec(ID, num_envs=2, kl_coef=kl_coef, reward_model=_zero)


def test_kl_options_are_checked_even_without_kl():
    with pytest.raises(ValueError, match="kl_estimator='k9'; expected one of"):
        make(kl_estimator="k9")
    with pytest.raises(ValueError, match="kl_mode='exact'; expected one of"):
        make(kl_coef=0.1, kl_mode="exact")


@pytest.mark.parametrize("value", [-5, 0, 2.5, True, "8"])
def test_max_prompt_tokens_must_be_a_positive_integer(value):
    """Regression: ``max_prompt_tokens=-5`` was accepted (every reset then failed) and ``0`` silently became 64."""
    with pytest.raises(ValueError, match=f"max_prompt_tokens={value!r} must be an integer >= 1"):
        make(max_prompt_tokens=value)


@pytest.mark.parametrize("value", [0, -1, 2.5, True, "24"])
def test_max_new_tokens_must_be_a_positive_integer(value):
    with pytest.raises(ValueError, match=f"max_new_tokens={value!r} must be an integer >= 1"):
        make(max_new_tokens=value)


def test_a_string_of_stop_strings_is_one_stop_string():
    """Regression: ``stop_strings="END"`` became the three stop strings "E", "N", "D"."""
    env = make(stop_strings="great .", max_new_tokens=6)
    assert env.unwrapped.task.stop_strings == ("great .",)
    env.reset(seed=0, options={"prompt": "the pasta was"})
    tok = env.unwrapped.task.tokenizer
    flags = [env.step(t)[2] for t in tok(" good and great .", add_special_tokens=False)["input_ids"]]
    assert flags[-1] and not any(flags[:-1])  # " good" contains a "g", "." alone does not stop it


@pytest.mark.parametrize("stop_strings", [[""], ["."] + [1], 5])
def test_stop_strings_must_be_non_empty_strings(stop_strings):
    with pytest.raises(ValueError, match="stop_strings=.* must be a string or a list of non-empty strings"):
        make(stop_strings=stop_strings)


def test_type_checks_of_the_other_arguments():
    with pytest.raises(TypeError, match="dense='yes' must be a bool"):
        make(dense="yes")
    with pytest.raises(TypeError, match="gold_reward must be None, a path .* got int"):
        make(gold_reward=5)
    with pytest.raises(TypeError, match="model must be a name or path .* got int"):
        make(model=3)
    with pytest.raises(ValueError, match="cap_flag='both'; expected one of"):
        make(cap_flag="both")
    with pytest.raises(TypeError, match="reward_model must be"):
        gym.make(ID, reward_model=5)
    with pytest.raises(TypeError, match="prompts must be a list of strings or a .jsonl path, got int"):
        make(prompts=5)


def test_task_and_task_arguments_are_not_both_accepted():
    task = TextTask(world.lm_path(progress=False), _zero, ["the pasta was"])
    with pytest.raises(TypeError, match=r"not both \(got task and \['max_new_tokens'\]\)"):
        TextGenerationEnv(task, max_new_tokens=4)


def test_an_over_long_prompt_is_refused_at_make_by_its_index():
    """Regression: an over-long prompt in ``prompts=`` was found only when a reset happened to draw it."""
    long = "the pasta was great . " * 40
    with pytest.raises(ValueError, match=r"prompts\[2\] of \d+ tokens exceeds max_prompt_tokens=64"):
        make(prompts=["the pasta was", "we stayed at", long])
    with pytest.raises(ValueError, match=r"prompts\[0\] of \d+ tokens exceeds max_prompt_tokens=3"):
        gym.make_vec(ID, num_envs=2, reward_model=_zero, prompts=["the pasta was great"], max_prompt_tokens=3)


def test_many_prompts_are_checked_in_one_batched_encode():
    """Construction encodes the prompt list once, as a batch, not prompt by prompt."""
    from transformers import PreTrainedTokenizerBase

    calls = []
    original = PreTrainedTokenizerBase.__call__

    def counting(self, text, *args, **kwargs):
        calls.append(1 if isinstance(text, str) else len(text))
        return original(self, text, *args, **kwargs)

    PreTrainedTokenizerBase.__call__ = counting
    try:
        TextTask(world.lm_path(progress=False), _zero, ["the pasta was"] * 500)
    finally:
        PreTrainedTokenizerBase.__call__ = original
    assert calls == [500]


def test_a_lone_surrogate_prompt_is_named_by_its_index():
    """Regression: a prompt "\\ud800" reached the tokenizer, which raised a bare ``TypeError``."""
    with pytest.raises(ValueError, match=r"prompt 1 is not valid Unicode text .*surrogates not allowed"):
        make(prompts=["the pasta was", "the \ud800 hotel"])
    env = make()
    with pytest.raises(ValueError, match="not valid Unicode text"):
        env.reset(options={"prompt": "\ud800"})


def test_jsonl_with_invalid_utf8_names_path_and_line(tmp_path):
    """Regression: a ``.jsonl`` with a byte that is not UTF-8 raised ``UnicodeDecodeError`` without path or line."""
    path = tmp_path / "prompts.jsonl"
    path.write_bytes(b'{"prompt": "the pasta was"}\n{"prompt": "caf\xe9 food"}\n')
    with pytest.raises(ValueError, match=r"prompts.jsonl:2: not valid UTF-8"):
        make(prompts=str(path))
    path.write_bytes(b'{"prompt": "the pasta was"}\n{"prompt": 7}\n')
    with pytest.raises(ValueError, match=r"prompts.jsonl:2 is 7; prompts must be non-empty strings"):
        make(prompts=str(path))


def test_bandit_rewards_and_actions_are_checked():
    with pytest.raises(ValueError, match="reward_a=nan must be a finite number"):
        gym.make("textenv/Bandit-v0", reward_a=float("nan"))
    env = gym.make("textenv/Bandit-v0").unwrapped
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"action 1.0 is outside Discrete\(2\)"):
        env.step(1.0)
    assert env.step(np.int64(0))[1] == 1.0


def _readers():
    from agents.text.sft import load_demonstrations
    from textenv.rm import load_preferences
    from textenv.task import load_prompts

    good = {"prompts": '{"prompt": "the pasta was"}', "preferences": '{"prompt": "p", "chosen": "a", "rejected": "b"}',
            "demonstrations": '{"prompt": "the pasta was", "completion": " great"}'}
    return [(load_prompts, good["prompts"]), (load_preferences, good["preferences"]),
            (load_demonstrations, good["demonstrations"])]


@pytest.mark.parametrize("reader, good", _readers(), ids=["prompts", "preferences", "demonstrations"])
@pytest.mark.parametrize("bad, message", [
    (b'{"prompt": "caf\xe9"}', r"not valid UTF-8 \(invalid continuation byte at byte 15\)"),
    (b'{"prompt": "the pasta was",', r"malformed JSON \(Expecting property name enclosed in double quotes at column 28\)"),
], ids=["not-utf8", "not-json"])
def test_every_jsonl_reader_names_file_and_line(tmp_path, reader, good, bad, message):
    """Guards against the three JSONL readers (prompts, preference data, demonstrations) each decoding and
    parsing on its own: a byte that is not UTF-8 raised a bare ``UnicodeDecodeError`` (no file, no line) from the
    preference and demonstration readers. One reader (:func:`textenv.jsonl.read_jsonl`) names ``file:line``,
    counting the blank line it skips."""
    path = tmp_path / "data.jsonl"
    path.write_bytes(good.encode() + b"\n\n" + bad + b"\n")
    with pytest.raises(ValueError, match=rf"{path}:3: {message}"):
        reader(str(path))
