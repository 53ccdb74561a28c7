"""textenv.rewards.protocol: a failing reward's error names the reward and the input it failed on.

The module docstring promises "errors that say which reward failed on which input instead of a bare traceback deep
in an env step"; these tests hold it to the wording, not just the exception type.
"""

import re

import pytest

from textenv.rewards.protocol import Reward, as_reward

PROMPTS, COMPLETIONS = ["the food was", "the room was"], [" great .", " dirty ."]


def exploding_reward(prompts, completions):
    raise KeyError("no score for this text")


class LengthReward:
    def __call__(self, prompts, completions):
        return [float(len(c)) for c in completions][:1]  # one score short


def test_an_exception_names_the_reward_its_error_and_the_first_input():
    with pytest.raises(RuntimeError) as error:
        as_reward(exploding_reward)(PROMPTS, COMPLETIONS)
    message = str(error.value)
    assert "reward 'exploding_reward' raised KeyError" in message and "no score for this text" in message
    assert "scoring 2 completions" in message
    assert "first prompt 'the food was', completion ' great .'" in message
    assert isinstance(error.value.__cause__, KeyError)  # the original traceback is kept


def test_a_wrong_number_of_scores_names_the_reward_and_the_counts():
    with pytest.raises(ValueError, match=re.escape("reward 'LengthReward' returned 1 scores for 2 completions; expected 2")):
        as_reward(LengthReward())(PROMPTS, COMPLETIONS)


def test_a_non_finite_score_names_the_reward_the_value_and_its_position():
    with pytest.raises(ValueError, match=re.escape("reward 'judge' returned non-finite scores [nan] at positions [1]")):
        Reward(lambda p, c: [0.5, float("nan")], name="judge")(PROMPTS, COMPLETIONS)


def test_a_bad_term_names_the_reward_and_the_term():
    terms = lambda p, c: {"style": [1.0, 2.0], "length": [float("inf"), 0.0]}  # noqa: E731
    with pytest.raises(ValueError, match=re.escape("reward 'multi' returned non-finite term 'length' [inf] at positions [0]")):
        Reward(terms, name="multi")(PROMPTS, COMPLETIONS)
    with pytest.raises(TypeError, match=re.escape("reward 'words' returned scores that are not numbers: ['high', 'low']")):
        Reward(lambda p, c: ["high", "low"], name="words")(PROMPTS, COMPLETIONS)
