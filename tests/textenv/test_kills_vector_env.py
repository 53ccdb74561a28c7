"""Tests written to kill the mutants of ``textenv/vector_env.py`` that survived ``benchmarks/mutation.py`` (see
benchmarks/results/mutation.md).

Each test names, in its docstring, the mutation it guards against and why the test catches it; expected values are
worked out by hand in the comments or come from an independent computation.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode
from transformers import AutoTokenizer

from textenv.vector_env import TextGenerationVectorEnv

PROMPTS = ["the food was", "the room was", "our waiter was"]


def _chars(prompts, completions):
    return [float(len(c)) for c in completions]


def _vec(lm_dir, n=2, **kwargs):
    """The batched env built from task keyword arguments: the built-in tokenizer, a length reward, no gold."""
    fields = dict(model=str(lm_dir), reward_model=_chars, prompts=PROMPTS, gold_reward=None, max_new_tokens=2)
    return TextGenerationVectorEnv(n, **{**fields, **kwargs})


def test_the_batched_env_is_built_from_task_keywords_with_its_spaces_and_metadata(lm_dir):
    """A mutant that drops the task keywords (``as_task(task, None)``), misspells the default ``"same_step"``, the
    ``render_modes`` entry or ``"ansi"``, starts ``render_mode`` as ``""``, leaves ``action_space`` unbatched (or
    None), starts with placeholder prompts, accepts ``num_envs`` 0 or 2.0 (``and``) or refuses 1 — caught by the
    env's exact metadata, spaces, initial prompts and these refusals."""
    env = _vec(lm_dir)
    V = env.single_action_space.n
    assert env.metadata == {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": ["ansi"]}
    assert env.render_mode is None
    assert env.action_space == gym.spaces.MultiDiscrete([V, V])
    assert env.prompts == ["", ""] and env.render() == ["|", "|"]
    assert _vec(lm_dir, n=1).num_envs == 1
    for bad in (0, 2.0):
        with pytest.raises(ValueError, match=rf"^num_envs={bad!r} must be an integer >= 1$"):
            _vec(lm_dir, n=bad)


def test_reset_seeds_each_env_and_refuses_a_wrong_number_of_seeds(lm_dir):
    """A mutant that has no random generators before the first seeded reset (``None``, the seed instead of the
    generator), treats a list of seeds as one int (``or True``: a TypeError) or drops the refusal's message —
    caught because an unseeded reset must sample prompts, ``seed=7`` must equal ``seed=[7, 8]``, and one seed for
    two envs must be refused naming the counts."""
    env = _vec(lm_dir)
    _, info = env.reset()
    assert set(info["prompt"]) <= set(PROMPTS)
    by_int = env.reset(seed=7)[1]["prompt"].tolist()
    assert env.reset(seed=[7, 8])[1]["prompt"].tolist() == by_int
    with pytest.raises(ValueError, match=r"^reset got 1 seeds for 2 envs$"):
        env.reset(seed=[1])


def test_reset_options_set_prompts_and_restart_only_the_masked_envs(lm_dir):
    """A mutant that ignores ``options["prompts"]`` (a misspelt key, ``prompts = None`` with a mask) or
    ``options["reset_mask"]`` (a misspelt key), keeps an int mask as ints, reports prompts in a ``<U`` array or
    ``_prompt`` under another key, or drops a refusal's message — caught by the info, the untouched env and the
    messages here."""
    env = _vec(lm_dir)
    obs, info = env.reset(options={"prompts": ["the pasta was", "the view was"]})
    assert info["prompt"].tolist() == ["the pasta was", "the view was"] and info["prompt"].dtype == object
    assert info["_prompt"].tolist() == [True, True]
    obs2, info = env.reset(options={"prompts": ["ignored", "the bed was"], "reset_mask": [0, 1]})
    assert info["prompt"].tolist() == ["the pasta was", "the bed was"]
    assert info["_prompt"].dtype == bool and info["_prompt"].tolist() == [False, True]
    np.testing.assert_array_equal(obs2["input_ids"][0], obs["input_ids"][0])
    with pytest.raises(ValueError, match=r"^reset_mask has shape \(3,\); expected \(2,\)$"):
        env.reset(options={"reset_mask": [True, True, False]})
    with pytest.raises(ValueError, match=r"^options\['prompts'\] has 1 prompts for 2 envs$"):
        env.reset(options={"prompts": ["one"]})


def test_stepping_before_reset_says_what_to_do(lm_dir):
    """A mutant that rewords the refusal — caught by matching all of it."""
    with pytest.raises(RuntimeError, match=r"^step\(\) called with every episode ended \(or before the first "
                                           r"reset\); call reset\(\) first$"):
        _vec(lm_dir).step(np.array([5, 6]))


def test_a_step_whose_reward_raises_leaves_the_completion_length_as_it_was(lm_dir):
    """A mutant that restores the length of a failed step as 1 (``= 1`` for ``-= 1``) — caught because after two
    tokens a failing third step must leave two, and the retried step then scores as if nothing had failed."""
    fail = {"now": False}

    def reward(prompts, completions):
        if fail["now"]:
            raise RuntimeError("reward server down")
        return _chars(prompts, completions)

    env = _vec(lm_dir, reward_model=reward, dense=True, max_new_tokens=4)
    env.reset(seed=0)
    env.step(np.array([5, 6]))
    env.step(np.array([7, 8]))
    fail["now"] = True
    with pytest.raises(RuntimeError, match="reward server down"):
        env.step(np.array([9, 10]))
    assert env.gen_len.tolist() == [2, 2]
    fail["now"] = False
    env.step(np.array([9, 10]))
    assert env.gen_len.tolist() == [3, 3]


def test_an_autoreset_step_reports_the_final_observation_and_info(lm_dir):
    """A mutant that drops the final observations or their mask (``None``, misspelt ``_final_obs``/``_final_info``),
    the final prompt or score, or the gold reward (``ended = None``, ``i not in gold``, ``gold is None and ...``,
    the value or key replaced) — caught because two envs capped in the same step must report exactly their last
    observation, prompt, score (the completion's length in characters, by hand) and gold value."""
    tokenizer = AutoTokenizer.from_pretrained(lm_dir)
    env = _vec(lm_dir, gold_reward=lambda p, c: [10.0 + len(x) for x in c])
    obs, _ = env.reset(options={"prompts": PROMPTS[:2]})
    env.step(np.array([5, 6]))
    _, rewards, terminated, _, info = env.step(np.array([7, 8]))
    completions = [tokenizer.decode([5, 7]), tokenizer.decode([6, 8])]
    assert terminated.tolist() == [True, True]
    assert rewards.tolist() == [float(len(c)) for c in completions]
    for i, tokens in enumerate(([5, 7], [6, 8])):
        start = int(obs["attention_mask"][i].sum())
        ids, mask = obs["input_ids"][i].copy(), obs["attention_mask"][i].copy()
        ids[start:start + 2], mask[start:start + 2] = tokens, 1
        np.testing.assert_array_equal(info["final_obs"][i]["input_ids"], ids)
        np.testing.assert_array_equal(info["final_obs"][i]["attention_mask"], mask)
    assert info["_final_obs"].tolist() == info["_final_info"].tolist() == [True, True]
    final = info["final_info"]
    assert final["prompt"].tolist() == PROMPTS[:2]
    assert final["score"].tolist() == [float(len(c)) for c in completions]
    assert final["reward_gold"].tolist() == [10.0 + len(c) for c in completions]


def test_episodes_end_without_a_gold_reward(lm_dir):
    """A mutant that calls a missing gold reward (``or`` for ``and``) or looks a row up in no gold (``gold = None``)
    — caught because without a gold reward two capped episodes must end normally, with no ``reward_gold``."""
    env = _vec(lm_dir)
    env.reset(seed=0)
    env.step(np.array([5, 6]))
    _, _, terminated, _, info = env.step(np.array([7, 8]))
    assert terminated.tolist() == [True, True] and "reward_gold" not in info["final_info"]


def test_actions_are_integer_token_ids_in_any_container(lm_dir):
    """A mutant that accepts float actions (``and`` in the dtype check), or no longer routes non-tensor actions
    through numpy (a list of 0-d arrays, what ``dist.sample().numpy()`` gives per env, then fails) — caught by
    the refusal message and by a step on such a list; ``render`` then shows each prompt and its completion."""
    tokenizer = AutoTokenizer.from_pretrained(lm_dir)
    env = _vec(lm_dir, max_new_tokens=3)
    env.reset(options={"prompts": PROMPTS[:2]})
    with pytest.raises(ValueError, match=r"^actions must be 2 integer token ids, got \(2,\) of torch\.float64$"):
        env.step(np.array([5.0, 6.0]))
    with pytest.raises(ValueError, match=r"^actions must be 2 integer token ids, got \(2,\) of torch\.bool$"):
        env.step(np.array([True, False]))
    env.step([np.array(5), np.array(6)])
    assert env.render() == [PROMPTS[0] + "|" + tokenizer.decode([5]), PROMPTS[1] + "|" + tokenizer.decode([6])]


def test_int32_actions_are_written_as_int64_token_ids(lm_dir):
    """A mutant that keeps the actions' own integer type (``dtype=None`` or dropped) — caught because writing int32
    ids into the env's int64 token buffer fails (index put needs equal dtypes): int32 actions must step and be
    stored as given."""
    env = _vec(lm_dir)
    obs, _ = env.reset(options={"prompts": PROMPTS[:2]})
    start = obs["attention_mask"].sum(1)
    obs, *_ = env.step(np.array([5, 6], dtype=np.int32))
    assert [obs["input_ids"][i, start[i]] for i in range(2)] == [5, 6]


