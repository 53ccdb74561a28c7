"""textenv/Arithmetic-v0 and its world: recipe, determinism, held-out split, reward, env spec, accuracy and pass@k.

Most tests use the default arithmetic world (built once per cache, about a minute on one thread, like ``lm_dir``);
determinism is checked on a tiny recipe built twice into a temporary cache.
"""

from __future__ import annotations

import json
import math

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import textenv  # noqa: F401  (registers the ids)
from agents.text.verifiable import evaluate_accuracy, pass_at_k
from textenv.world import arithmetic
from textenv.world.arithmetic import ArithmeticRecipe, solve
from textenv.world.cache import sha256_file

ID = "textenv/Arithmetic-v0"
TINY = ArithmeticRecipe(max_operand=9, n_eval=20, n_layer=1, n_embd=16, n_head=2, n_positions=16, train_steps=15,
                        batch_size=16)


@pytest.fixture(scope="module")
def arith_dir():
    """The default arithmetic world (built here if it is not cached)."""
    return arithmetic.build(progress=False)


@pytest.fixture(scope="module")
def tokenizer(arith_dir):
    from textenv.lm import load_tokenizer

    return load_tokenizer(arith_dir / "lm")


def _ids(tokenizer, text: str, eos: bool = True) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"] + ([tokenizer.eos_token_id] if eos else [])


def _play(env, prompt: str, actions: list[int]):
    """Reset on ``prompt``, step ``actions`` until the episode ends; returns the last step's reward, flags, info."""
    env.reset(seed=0, options={"prompt": prompt})
    for a in actions:
        _, reward, terminated, truncated, info = env.step(a)
        if terminated or truncated:
            return reward, terminated, truncated, info
    raise AssertionError(f"episode of {prompt!r} did not end after {len(actions)} actions")


# ------------------------------------------------------------------------------------------------ recipe and world
def test_recipe_digest_follows_every_field_and_refuses_bad_values():
    assert ArithmeticRecipe().digest == ArithmeticRecipe(seed=0).digest
    assert len({ArithmeticRecipe(**{k: v}).digest for k, v in
                [("seed", 0), ("seed", 1), ("train_steps", 10), ("lr", 1e-3), ("n_eval", 100)]}) == 5
    assert arithmetic.arithmetic_dir(TINY).name == f"arithmetic-{TINY.digest}"
    for bad, match in [(dict(n_eval=0), "n_eval=0 must be an integer >= 1"),
                       (dict(max_operand=1, n_eval=7), "leaves no training problems out of 7"),
                       (dict(n_embd=30), "divisible by n_head"),
                       (dict(lr=0.0), "lr=0.0 must be a finite number > 0"),
                       (dict(n_positions=8), "shorter than a problem"),
                       (dict(train_steps=2.5), "train_steps=2.5 must be an integer")]:
        with pytest.raises(ValueError, match=match):
            ArithmeticRecipe(**bad)


def test_solve_and_the_problem_set():
    assert [solve(p) for p in ("47+38=", "99+99=", "30-12=", "5-5=", " 7 + 0 = ")] == ["85", "198", "18", "0", "7"]
    for bad in ("47*38=", "47+38", "-3+4=", "", "a+b="):
        with pytest.raises(ValueError, match="is not an arithmetic problem"):
            solve(bad)
    problems = arithmetic.make_problems(ArithmeticRecipe(max_operand=9, n_eval=20))
    prompts = [p["prompt"] for p in problems]
    assert len(prompts) == len(set(prompts)) == 100 + 55  # every a+b, and a-b with a >= b
    assert all(p["answer"] == solve(p["prompt"]) and not p["answer"].startswith("-") for p in problems)
    assert [p["split"] for p in problems] == ["eval"] * 20 + ["train"] * 135
    assert arithmetic.make_problems(ArithmeticRecipe(max_operand=9, n_eval=20, seed=1)) != problems  # seeded order


def test_held_out_problems_never_appear_in_training(arith_dir):
    rows = arithmetic.load_problems(arith_dir / "problems.jsonl")
    assert rows == arithmetic.make_problems(ArithmeticRecipe())  # what the LM was trained on: the train rows
    train = {r["prompt"] for r in rows if r["split"] == "train"}
    held_out = {r["prompt"] for r in rows if r["split"] == "eval"}
    assert len(held_out) == ArithmeticRecipe().n_eval and len(train) == len(rows) - len(held_out)
    assert not train & held_out
    env = gym.make_vec(ID, num_envs=1)
    assert set(env.unwrapped.task.prompts) == train  # the env draws only train problems


def test_tokenizer_is_character_level_with_eos_and_a_separate_pad(tokenizer, arith_dir):
    manifest = json.loads((arith_dir / "manifest.json").read_text())
    assert len(tokenizer) == manifest["vocab_size"] == 17
    assert tokenizer.eos_token_id is not None and tokenizer.pad_token_id not in (None, tokenizer.eos_token_id)
    ids = tokenizer("47+38=85", add_special_tokens=False)["input_ids"]
    assert len(ids) == 8 and tokenizer.decode(ids) == "47+38=85"
    assert tokenizer.decode(ids + [tokenizer.eos_token_id], skip_special_tokens=True) == "47+38=85"
    assert tokenizer("x", add_special_tokens=False)["input_ids"] == [tokenizer.unk_token_id]
    assert manifest["parameters"] < 1_000_000


def test_the_base_lm_is_partly_right_on_held_out_problems(arith_dir):
    manifest = json.loads((arith_dir / "manifest.json").read_text())
    assert 0.2 < manifest["eval_greedy"] < 0.8 and 0.15 < manifest["eval_sampled"] < 0.6, manifest
    assert manifest["eval_sampled"] < manifest["eval_greedy"] and manifest["eval_pass_at_8"] > 0.5, manifest


def test_same_recipe_same_bits_another_seed_other_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TEXTENV_CACHE", str(tmp_path))
    first = arithmetic.build(TINY, progress=False)
    weights = sha256_file(first / "lm" / "model.safetensors")
    problems = (first / "problems.jsonl").read_text()
    again = arithmetic.build(TINY, force=True, progress=False)  # rebuilt from scratch into the same folder
    assert sha256_file(again / "lm" / "model.safetensors") == weights
    assert (again / "problems.jsonl").read_text() == problems
    other = arithmetic.build(ArithmeticRecipe(**{**TINY.__dict__, "seed": 1}), progress=False)
    assert sha256_file(other / "lm" / "model.safetensors") != weights
    manifest = json.loads((again / "manifest.json").read_text())
    assert manifest["digest"] == TINY.digest and manifest["train_problems"] == 135


# ------------------------------------------------------------------------------------------------ reward and info
def test_reward_is_correctness_of_the_first_integer(tokenizer):
    env = gym.make(ID)
    for completion, right in [("85", 1.0), ("84", 0.0), ("85 9", 1.0), ("-85", 0.0), ("8", 0.0), ("185", 0.0)]:
        reward, terminated, truncated, info = _play(env, "47+38=", _ids(tokenizer, completion))
        assert (reward, info["reward_correct"], info["score"], info["reward_gold"]) == (right,) * 4, completion
        assert terminated and not truncated and not info["capped"] and info["completion"] == completion
        assert info["num_tokens"] == len(completion) + 1 and info["prompt"] == "47+38="


@pytest.mark.parametrize("completion", ["", "+-=", "= =", "  +"])
def test_garbage_and_empty_completions_score_zero(tokenizer, completion):
    reward, terminated, _, info = _play(gym.make(ID), "30-12=", _ids(tokenizer, completion))
    assert terminated and reward == 0.0 and info["reward_gold"] == 0.0 and info["completion"] == completion


def test_special_tokens_and_the_cap(tokenizer):
    env = gym.make(ID)
    unk, pad = tokenizer.unk_token_id, tokenizer.pad_token_id
    reward, terminated, truncated, info = _play(env, "2+3=", [unk, pad, *_ids(tokenizer, "5")])
    assert reward == 1.0 and info["completion"] == "5"  # special tokens decode to nothing
    digits = _ids(tokenizer, "5" * 8, eos=False)
    reward, terminated, truncated, info = _play(env, "2+3=", digits)  # cut at the cap of 8 tokens
    assert terminated and not truncated and info["capped"] and info["num_tokens"] == 8 and reward == 0.0
    reward, _, _, info = _play(gym.make(ID, max_new_tokens=2), "2+3=", _ids(tokenizer, "5=", eos=False))
    assert info["capped"] and reward == 1.0  # a capped completion is scored as it stands


def test_format_reward_is_an_optional_extra_term(tokenizer):
    env = gym.make(ID, format_coef=0.5)
    reward, _, _, info = _play(env, "47+38=", _ids(tokenizer, "85"))
    assert (reward, info["reward_correct"], info["reward_format"], info["reward_gold"]) == (1.5, 1.0, 0.5, 1.0)
    reward, _, _, info = _play(env, "47+38=", _ids(tokenizer, "85+"))
    assert (reward, info["reward_format"]) == (1.0, 0.0)
    reward, _, _, info = _play(env, "47+38=", _ids(tokenizer, "84"))
    assert (reward, info["reward_gold"]) == (0.5, 0.0)  # well formed, wrong: gold stays correctness
    _, _, _, info = _play(gym.make(ID), "47+38=", _ids(tokenizer, "85"))
    assert "reward_format" not in info


def test_prompts_of_your_own_and_bad_arguments(tokenizer):
    env = gym.make(ID, prompts=["123+456=", "2-9="])
    reward, _, _, _ = _play(env, "123+456=", _ids(tokenizer, "579"))
    assert reward == 1.0
    reward, _, _, _ = _play(env, "2-9=", _ids(tokenizer, "-7"))
    assert reward == 1.0
    reward, _, _, _ = _play(env, "70-1=", _ids(tokenizer, "69"))  # a reset prompt outside the list is solved too
    assert reward == 1.0
    env = gym.make(ID, prompts=["two plus two="], answers={"two plus two=": "4"})
    assert _play(env, "two plus two=", _ids(tokenizer, "4"))[0] == 1.0
    with pytest.raises(ValueError, match=r"prompts\[1\]: prompt 'hello' is not an arithmetic problem.*answers="):
        gym.make(ID, prompts=["1+1=", "hello"])
    with pytest.raises(ValueError, match="format_coef=-1 must be a finite number >= 0"):
        gym.make(ID, format_coef=-1)
    with pytest.raises(TypeError, match="answers must be a dict"):
        gym.make(ID, answers=["4"])


# ------------------------------------------------------------------------------------------------ env spec
def test_gymnasium_and_sb3_checkers_accept_the_env():
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    check_env(gym.make(ID).unwrapped, skip_render_check=True)
    sb3_check_env(gym.make(ID).unwrapped, warn=False)
    env = gym.make(ID)
    assert env.action_space.n == 17 and env.observation_space["input_ids"].shape == (64,)


def _roll(env, seed: int, action_seed: int, steps: int = 40):
    rng = np.random.default_rng(action_seed)
    obs, info = env.reset(seed=seed)
    rows = [info["prompt"]]
    for _ in range(steps):
        obs, reward, terminated, truncated, info = env.step(int(rng.integers(env.action_space.n)))
        rows.append((reward, terminated, truncated, info.get("completion"), info.get("capped")))
        if terminated or truncated:
            obs, info = env.reset()
            rows.append(info["prompt"])
    return rows, obs


def test_same_seed_same_prompts_rewards_and_observations():
    a, obs_a = _roll(gym.make(ID), seed=7, action_seed=1)
    b, obs_b = _roll(gym.make(ID), seed=7, action_seed=1)
    c, _ = _roll(gym.make(ID), seed=8, action_seed=1)
    assert a == b and a != c
    np.testing.assert_array_equal(obs_a["input_ids"], obs_b["input_ids"])


def test_batched_env_equals_n_single_envs_on_the_same_actions(tokenizer):
    n, steps = 4, 30
    kwargs = dict(max_new_tokens=4, prompts=["1+1=", "0+2=", "9-7=", "40+2="])  # answers 2, 2, 2, 42
    digits = tokenizer("0123456789", add_special_tokens=False)["input_ids"]

    def draw(rng):  # digits (often a 2), sometimes EOS: short episodes, some of them right
        return tokenizer.eos_token_id if rng.random() < 0.3 else int(rng.choice(digits + [digits[2]] * 5))

    single = []
    for i in range(n):
        env, rng = gym.make(ID, **kwargs), np.random.default_rng(100 + i)
        env.reset(seed=11 + i)
        rows = []
        for _ in range(steps):
            a = draw(rng)
            _, r, te, tr, info = env.step(a)
            rows.append((a, r, te, tr, info.get("completion"), info.get("reward_gold"), info.get("capped")))
            if te or tr:
                env.reset()
        single.append(rows)
    env = gym.make_vec(ID, num_envs=n, **kwargs)
    rngs = [np.random.default_rng(100 + i) for i in range(n)]
    env.reset(seed=11)
    batched = [[] for _ in range(n)]
    for _ in range(steps):
        acts = np.array([draw(r) for r in rngs])
        _, rewards, te, tr, infos = env.step(acts)
        final = infos.get("final_info", {})
        for i in range(n):
            end = bool(te[i] or tr[i])
            batched[i].append((int(acts[i]), float(rewards[i]), bool(te[i]), bool(tr[i]),
                               final["completion"][i] if end else None, final["reward_gold"][i] if end else None,
                               final["capped"][i] if end else None))
    assert single == batched
    ends = [x for row in batched for x in row if x[2] or x[3]]
    assert len(ends) >= 12 and 3 <= sum(x[1] for x in ends) < len(ends)  # autoresets; some episodes right, not all


def test_the_agents_treat_it_as_a_text_env():
    from agents.text.pg import PGConfig
    from textenv.registration import is_text_env

    assert is_text_env(ID) and PGConfig(env_id=ID, estimator="grpo", group_size=8).is_text


# ------------------------------------------------------------------------------------------------ accuracy, pass@k
def test_pass_at_k_by_hand():
    # n=5 samples, c=2 right: pass@2 = 1 - C(3,2)/C(5,2) = 1 - 3/10
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)  # pass@1 = c/n
    assert pass_at_k(5, 2, 4) == 1.0 and pass_at_k(5, 0, 5) == 0.0  # n - c < k: every 4 samples hold a right one
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - 21 / 252)  # C(7,5) = 21, C(10,5) = 252
    for n in range(1, 12):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k), abs=1e-12)
    for bad in [(4, 1, 5), (4, 5, 1), (4, 1, 0)]:
        with pytest.raises(ValueError, match="1 <= k <= n"):
            pass_at_k(*bad)


def test_accuracy_of_the_base_lm_is_seeded_and_matches_generate(arith_dir):
    from textenv.lm import load_causal_lm, load_tokenizer

    problems = arithmetic.load_problems(arith_dir / "problems.jsonl", split="eval")[:100]
    prompts = [r["prompt"] for r in problems]
    first = evaluate_accuracy(arith_dir / "lm", prompts, n=4, seed=3)
    again = evaluate_accuracy(arith_dir / "lm", prompts, n=4, seed=3)
    assert first.summary() == again.summary() and first.completions == again.completions
    assert first.right.shape == (100, 4) and set(np.unique(first.right)) <= {0.0, 1.0}
    summary = first.summary(ks=(1, 2, 4))
    assert summary["pass@1"] == pytest.approx(summary["sampled"])
    assert summary["sampled"] <= summary["pass@2"] <= summary["pass@4"] == pytest.approx(np.mean(first.right.max(1)))
    # greedy through the env's KV-cached steps equals transformers' greedy generate
    model, tokenizer = load_causal_lm(arith_dir / "lm"), load_tokenizer(arith_dir / "lm")
    reference = arithmetic.held_out_accuracy(model, tokenizer, problems, k=1)
    assert summary["greedy"] == pytest.approx(reference["greedy"], abs=0.02)


def test_cli_builds_the_arithmetic_world(arith_dir, capsys):
    from agents.cli import app as cli

    cli.main(["build-world", "--task", "arithmetic"])
    out = capsys.readouterr().out
    assert f"arithmetic world: {arith_dir}" in out and "held-out accuracy" in out and "pass@8" in out
    with pytest.raises(SystemExit) as stop:
        cli.main(["build-world", "--task", "chess"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith("textenv: error: ") and err.count("\n") == 1 and "chess" in err


# ------------------------------------------------------------------------------------------------ learning
@pytest.mark.slow
def test_grpo_raises_held_out_accuracy(tmp_path, arith_dir):
    """GRPO (group of 8, no KL) on the train problems; accuracy measured on the 500 held-out ones."""
    from agents.text.pg import PGConfig, train_pg

    prompts = [r["prompt"] for r in arithmetic.load_problems(arith_dir / "problems.jsonl", split="eval")]
    before = evaluate_accuracy(arith_dir / "lm", prompts, n=4, seed=1).summary()
    config = PGConfig(estimator="grpo", env_id=ID, group_size=8, prompts_per_iter=32, iterations=400, lr=5e-4,
                      max_new_tokens=8, kl_coef=0.0, seed=0, checkpoint_every=100)
    result = train_pg(config, tmp_path, progress=False)
    after = evaluate_accuracy(result.policy, prompts, n=4, seed=1).summary()
    # measured (1 thread): sampled 0.252 -> 0.544, greedy 0.490 -> 0.612 (seeds 1, 2: 0.550/0.620, 0.517/0.584)
    assert after["sampled"] > before["sampled"] + 0.2, (before, after)
    assert after["greedy"] > before["greedy"] + 0.05, (before, after)
    assert result.rows[-1]["gold"] == result.rows[-1]["proxy"]  # the reward is correctness: gold and proxy agree
