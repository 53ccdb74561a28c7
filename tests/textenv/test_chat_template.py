"""Chat templates: a prompt is rendered as a user turn, the template's end-of-turn token ends the episode as EOS
does, and rewards see the text the user would see (the prompt as given, the completion without special tokens)."""

import gymnasium as gym
import numpy as np
import pytest

from textenv.task import TextTask, end_of_turn_ids

ID = "textenv/Sentiment-v1"
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


class Recorder:
    """A reward that records what it was given and scores the completion's length."""

    def __init__(self):
        self.seen = []

    def __call__(self, prompts, completions):
        self.seen.extend(zip(prompts, completions))
        return [float(len(c)) for c in completions]


def test_end_of_turn_is_the_special_token_after_an_assistant_message(chat_lm):
    from textenv.lm import load_tokenizer

    tokenizer = load_tokenizer(chat_lm)
    assert end_of_turn_ids(tokenizer) == (tokenizer.convert_tokens_to_ids("<|im_end|>"),)
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}\n\n{% endfor %}"  # closes turns with text
    assert end_of_turn_ids(tokenizer) == ()


def test_the_prompt_is_a_user_turn_and_end_of_turn_ends_the_episode_with_visible_text(chat_lm):
    reward = Recorder()
    env = gym.make(ID, model=str(chat_lm), reward_model=reward, prompts=["the film was"], max_new_tokens=6,
                   gold_reward=None)
    task = env.unwrapped.task
    assert task.chat
    obs, _ = env.reset(seed=0)
    prompt_ids = env.unwrapped.prompt_token_ids()
    assert task.tokenizer.decode(prompt_ids) == "<|im_start|>user\nthe film was<|im_end|>\n<|im_start|>assistant\n"
    assert obs["input_ids"][: len(prompt_ids)].tolist() == prompt_ids
    end = task.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert task.stop_token_ids == (task.eos_token_id, end)
    word = task.tokenizer(" good", add_special_tokens=False)["input_ids"][0]
    _, _, terminated, truncated, _ = env.step(word)
    assert not (terminated or truncated)
    _, reward_value, terminated, truncated, info = env.step(end)
    assert terminated and not truncated and not info["capped"]
    assert reward.seen == [("the film was", " good")]  # the prompt as given, the completion without <|im_end|>
    assert info["completion"] == " good" and reward_value == float(len(" good"))


def test_the_batched_env_stops_rows_on_end_of_turn_too(chat_lm):
    env = gym.make_vec(ID, num_envs=2, model=str(chat_lm), reward_model=Recorder(), prompts=["the film was"],
                       max_new_tokens=6, gold_reward=None, autoreset_mode="disabled")
    task = env.unwrapped.task
    env.reset(seed=0)
    end = task.tokenizer.convert_tokens_to_ids("<|im_end|>")
    word = task.tokenizer(" good", add_special_tokens=False)["input_ids"][0]
    _, _, terminated, _, _ = env.step(np.array([end, word]))
    assert terminated.tolist() == [True, False]


def test_chat_template_false_uses_the_plain_prompt_and_true_needs_a_template(chat_lm, lm_dir):
    plain = TextTask(model=str(chat_lm), reward_model=Recorder(), prompts=["the film was"], chat_template=False)
    assert not plain.chat and plain.stop_token_ids == (plain.eos_token_id,)
    assert plain.encode_prompt("the film was") == plain.tokenizer("the film was", add_special_tokens=False)["input_ids"]
    with pytest.raises(ValueError, match=r"chat_template=True, but the tokenizer of .* has no chat template"):
        TextTask(model=str(lm_dir), reward_model=Recorder(), prompts=["the film was"], chat_template=True)
    with pytest.raises(TypeError, match=r"chat_template='yes' must be True, False or None"):
        TextTask(model=str(lm_dir), reward_model=Recorder(), prompts=["the film was"], chat_template="yes")


def test_the_built_in_world_has_no_template_and_is_unchanged(lm_dir):
    task = TextTask(model=str(lm_dir), reward_model=Recorder(), prompts=["the film was"])
    assert not task.chat and task.stop_token_ids == (task.eos_token_id,)


def test_a_prompt_too_long_once_rendered_is_refused_at_construction(chat_lm):
    with pytest.raises(ValueError, match=r"prompts\[0\] of \d+ tokens \(rendered as a user turn of the chat "
                                         r"template.*exceeds max_prompt_tokens=8"):
        TextTask(model=str(chat_lm), reward_model=Recorder(), prompts=["the film was"], max_prompt_tokens=8)


def test_smollm2_renders_its_own_template_and_stops_on_im_end(smollm2_path):
    reward = Recorder()
    env = gym.make(ID, model=str(smollm2_path), reward_model=reward, prompts=["Say yes."], max_new_tokens=4,
                   gold_reward=None)
    task = env.unwrapped.task
    env.reset(seed=0)
    rendered = task.tokenizer.decode(env.unwrapped.prompt_token_ids())
    assert rendered.endswith("<|im_start|>user\nSay yes.<|im_end|>\n<|im_start|>assistant\n")
    im_end = task.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert im_end in task.stop_token_ids
    yes = task.tokenizer("Yes", add_special_tokens=False)["input_ids"][0]
    env.step(yes)
    _, _, terminated, _, info = env.step(im_end)
    assert terminated and reward.seen == [("Say yes.", "Yes")]


def test_a_template_that_cannot_render_a_user_turn_says_how_to_turn_it_off(chat_lm, tmp_path):
    from textenv.lm import load_tokenizer

    tokenizer = load_tokenizer(chat_lm)
    tokenizer.chat_template = ("{% if messages[0]['role'] != 'system' %}{{ raise_exception('a system message is "
                               "required') }}{% endif %}{% for m in messages %}{{ m['content'] }}{% endfor %}")
    tokenizer.save_pretrained(chat_lm.parent / "needs-system")
    import shutil

    folder = tmp_path / "needs-system"
    shutil.copytree(chat_lm, folder)
    tokenizer.save_pretrained(folder)
    with pytest.raises(ValueError, match=r"cannot render a prompt as a single user turn .*chat_template=False"):
        TextTask(model=str(folder), reward_model=Recorder(), prompts=["the film was"])
    assert not TextTask(model=str(folder), reward_model=Recorder(), prompts=["the film was"], chat_template=False).chat


def test_sft_and_dpo_batches_render_prompts_as_the_env_does(chat_lm):
    from agents.policies.lm import sequence_batch
    from textenv.lm import load_tokenizer

    tokenizer = load_tokenizer(chat_lm)
    env_ids = TextTask(model=str(chat_lm), reward_model=Recorder(), prompts=["the film was"]).encode_prompt("the film was")
    batch = sequence_batch(tokenizer, ["the film was"], [" good"], add_eos=True)
    P = int(batch["prompt_len"][0])
    assert batch["input_ids"][0, :P].tolist() == env_ids
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert batch["actions"][0][batch["mask"][0]].tolist()[-1] == end  # the turn ends as the env's episode does
    plain = sequence_batch(tokenizer, ["the film was"], [" good"], add_eos=True, chat_template=False)
    assert plain["input_ids"][0, : int(plain["prompt_len"][0])].tolist() == tokenizer("the film was",
                                                                                     add_special_tokens=False)["input_ids"]


def test_template_tokens_the_model_has_no_embeddings_for_are_refused(lm_dir, tmp_path):
    """A tokenizer given ChatML's tokens without resizing the model: the rendered prompt holds ids past the
    vocabulary, which the observation space and the model cannot take."""
    import shutil

    from textenv.lm import load_tokenizer

    folder = tmp_path / "unresized"
    shutil.copytree(lm_dir, folder)
    tokenizer = load_tokenizer(lm_dir)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = CHATML
    tokenizer.save_pretrained(folder)
    with pytest.raises(ValueError, match=r"token id 20\d\d, outside the model's vocabulary of 2048.*chat_template=False"):
        TextTask(model=str(folder), reward_model=Recorder(), prompts=["the film was"])
