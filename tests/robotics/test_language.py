"""The language-conditioned BabyAI tasks (robotics/language.py), their policies (agents/policies/language.py) and
training (agents/control/language.py): spaces, seeding, splits, tokenisation, datasets, shapes, resume, learning."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

pytest.importorskip("minigrid")

import robotics  # noqa: E402,F401
from agents.control import ControlPPOConfig, train_control_ppo  # noqa: E402
from agents.control.language import LanguageBCConfig, evaluate_success, train_language_bc  # noqa: E402
from agents.policies.language import FiLMPolicy, RT1Policy, make_language_policy  # noqa: E402
from robotics.language import (  # noqa: E402
    HELDOUT_PAIRS,
    LANGUAGE_IDS,
    MAX_WORDS,
    VOCAB,
    collect_bot_episodes,
    encode_mission,
    encode_observation,
    mission_pairs,
    mission_split,
    paraphrase,
)

GOTO = "robotics/BabyAI-GoToLocal-v0"
TOKENS = {"observation": "tokens"}


def _decode(words: np.ndarray) -> str:
    return " ".join(VOCAB[int(w)] for w in words if w != 0)


def _token_env(env_id=GOTO, **kwargs):
    return gym.make(env_id, observation="tokens", **kwargs)


@pytest.mark.parametrize("env_id", list(LANGUAGE_IDS))
@pytest.mark.parametrize("observation", ["text", "tokens"])
def test_every_id_passes_gymnasiums_env_checker(env_id, observation):
    from gymnasium.utils.env_checker import check_env

    check_env(gym.make(env_id, observation=observation).unwrapped, skip_render_check=True)


def test_the_text_observation_carries_the_mission_as_a_string():
    obs, info = gym.make(GOTO).reset(seed=0)
    assert isinstance(obs["mission"], str) and obs["mission"] == info["mission"]
    assert obs["mission"].startswith("go to ") and obs["image"].shape == (7, 7, 3)


@pytest.mark.parametrize(("env_id", "split"), [(GOTO, "train"), (GOTO, "heldout"), (GOTO, "paraphrase"),
                                               ("robotics/BabyAI-PickupLoc-v0", "paraphrase"),
                                               ("robotics/BabyAI-PutNextLocal-v0", "heldout")])
def test_the_same_seed_gives_the_same_episode(env_id, split):
    def episode(seed):
        env = _token_env(env_id, split=split)
        obs, info = env.reset(seed=seed)
        frames, rewards = [obs], []
        for action in [0, 2, 2, 1, 2, 3, 2, 6] * 3:
            obs, reward, terminated, truncated, _ = env.step(action)
            frames.append(obs)
            rewards.append(reward)
            if terminated or truncated:
                break
        return info["mission"], np.stack(frames), rewards

    a, b, c = episode(5), episode(5), episode(6)
    assert a[0] == b[0] and np.array_equal(a[1], b[1]) and a[2] == b[2]
    assert not np.array_equal(a[1][0], c[1][0])  # another seed, another layout


def test_missions_are_encoded_word_by_word_with_unk_and_pad():
    # VOCAB: go=8, to=23, the=22, red=20, ball=3; "walk" and "sphere" are not words of BabyAI's missions
    assert encode_mission("go to the red ball")[:6].tolist() == [8, 23, 22, 20, 3, 0]
    assert encode_mission("walk to the red sphere")[:5].tolist() == [1, 23, 22, 20, 1]
    assert encode_mission("").tolist() == [0] * MAX_WORDS
    with pytest.raises(ValueError, match="17 words"):
        encode_mission(" ".join(["go"] * 17))


def test_the_token_observation_is_the_grid_the_direction_and_the_words():
    image = np.arange(147).reshape(7, 7, 3) % 11
    obs = encode_observation(image, 2, "go to a box")
    assert obs.dtype == np.float32 and obs.shape == (147 + 1 + MAX_WORDS,)
    assert np.array_equal(obs[:147], image.reshape(-1)) and obs[147] == 2
    assert _decode(obs[148:]) == "go to a box"
    env = gym.make(GOTO)  # the token env shows the text env's grid, direction and mission
    text_obs, _ = env.reset(seed=3)
    token_obs, _ = _token_env().reset(seed=3)
    assert np.array_equal(token_obs, encode_observation(text_obs["image"], text_obs["direction"], text_obs["mission"]))


def test_mission_splits_follow_the_heldout_pairs():
    assert mission_pairs("put the red ball next to the grey key") == [("red", "ball"), ("grey", "key")]
    assert mission_split("go to the red ball") == "heldout"  # (red, ball) is held out
    assert mission_split("put the grey box next to the green key") == "heldout"  # the second object counts too
    assert mission_split("go to a red box") == "train"
    assert mission_split("pick up a ball") == "train"  # no colour, no combination
    assert len(HELDOUT_PAIRS) == 4


@pytest.mark.parametrize("env_id", list(LANGUAGE_IDS))
def test_train_missions_never_name_a_heldout_pair_and_heldout_ones_always_do(env_id):
    train, heldout = _token_env(env_id, split="train"), _token_env(env_id, split="heldout")
    for seed in range(60):
        assert mission_split(train.reset(seed=seed)[1]["mission"]) == "train"
        assert mission_split(heldout.reset(seed=seed)[1]["mission"]) == "heldout"


def test_bot_demonstrations_hold_only_train_missions_in_every_observation():
    episodes, missions, dropped = collect_bot_episodes(GOTO, 40, seed=0, noise=0.3)
    assert len(episodes) == 40
    for episode, mission in zip(episodes, missions):
        assert mission_split(mission) == "train"
        assert {_decode(o[148:]) for o in episode.observations} == {mission}


def test_paraphrases_rewrite_verbs_and_relations_never_objects_and_keep_the_task():
    assert paraphrase("go to the red ball", np.random.default_rng(0)) in {
        f"{verb} the red ball" for verb in ("walk over to", "head to", "move to")}
    words = paraphrase("put the grey key next to a box", np.random.default_rng(1)).split()
    assert words[0] in {"place", "move"} and words[1:4] == ["the", "grey", "key"] and words[-2:] == ["a", "box"]
    assert " ".join(words[4:-2]) in {"beside", "near"}
    assert paraphrase("pick up the ball in front of you", np.random.default_rng(0)).endswith("the ball ahead of you")
    paraphrased, train = _token_env(split="paraphrase"), _token_env(split="train")
    for seed in range(30):
        obs, info = paraphrased.reset(seed=seed)
        same, train_info = train.reset(seed=seed)
        assert info["original_mission"] == train_info["mission"]  # the train split's episode for the seed...
        assert np.array_equal(obs[:148], same[:148])  # ...its scene and direction, only the words differ
        assert info["mission"] != info["original_mission"]  # "go to" is always rewritten
        assert mission_pairs(info["mission"]) == mission_pairs(info["original_mission"])


def test_the_bot_solves_the_levels_and_random_actions_rarely_do():
    for env_id, at_most in zip(LANGUAGE_IDS, (0.5, 0.3, 0.1)):  # random: about 30 %, 10 % and 0 % (100 episodes)
        episodes, _, _ = collect_bot_episodes(env_id, 10, seed=0)
        assert all(ep.terminations[-1] and ep.rewards[-1] > 0 for ep in episodes), env_id
        env, rng, wins = _token_env(env_id), np.random.default_rng(0), 0
        for seed in range(40):
            env.reset(seed=seed)
            done = False
            while not done:
                _, _, terminated, truncated, info = env.step(int(rng.integers(7)))
                done = terminated or truncated
            wins += info["success"]
        assert wins / 40 <= at_most, (env_id, wins)


def test_the_noisy_bot_recovers_from_random_pickups_and_drops_few_episodes():
    """The bot is told the action actually taken (replan(action_taken)), so after a random pickup it drops the
    object and goes on; a bot rebuilt after each random action would fail on most PutNextLocal episodes."""
    episodes, _, dropped = collect_bot_episodes("robotics/BabyAI-PutNextLocal-v0", 30, seed=0, noise=0.3)
    assert dropped <= 3, dropped
    assert [ep.seed for ep in episodes] == sorted(set(ep.seed for ep in episodes))  # kept seeds, increasing
    assert max(ep.seed for ep in episodes) == 30 + dropped - 1
    lengths = [len(ep) for ep in episodes]
    clean, _, _ = collect_bot_episodes("robotics/BabyAI-PutNextLocal-v0", 30, seed=0)
    assert np.mean(lengths) > 1.2 * np.mean([len(ep) for ep in clean])  # the random steps are in the data


def test_bad_task_arguments_are_refused_by_name():
    for kwargs, match in ((dict(split="test"), "split='test'"), (dict(observation="pixels"), "observation='pixels'"),
                          (dict(level="BossLevel"), "level='BossLevel'")):
        with pytest.raises(ValueError, match=match):
            robotics.language.BabyAILanguageEnv(**kwargs)


@pytest.mark.parametrize("env_id", list(LANGUAGE_IDS))
def test_datasets_round_trip_exactly_with_their_missions(env_id, tmp_path, monkeypatch):
    pytest.importorskip("minari")
    import json

    from robotics.datasets import load_dataset
    from robotics.language import collect_language_datasets

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    name = env_id.split("/")[1].split("-v")[0].lower()  # babyai-gotolocal
    summary = collect_language_datasets(env_id, 12, seed=3, noise=0.5, progress=False)
    assert set(summary) == {f"robotics/{name}/bot-v0", f"robotics/{name}/noisy-bot-v0"}
    for kind, noise in (("bot", 0.0), ("noisy-bot", 0.5)):
        episodes, missions, _ = collect_bot_episodes(env_id, 12, seed=3, noise=noise)
        data = load_dataset(f"robotics/{name}/{kind}-v0", env=_token_env(env_id))
        assert np.array_equal(data.observations, np.concatenate([e.observations[:-1] for e in episodes]))
        assert np.array_equal(data.next_observations, np.concatenate([e.observations[1:] for e in episodes]))
        assert np.array_equal(data.actions, np.concatenate([e.actions for e in episodes]).astype(np.float32))
        assert np.array_equal(data.rewards, np.concatenate([e.rewards for e in episodes]).astype(np.float32))
        assert data.num_episodes == 12 and data.env_id == env_id
        stored = json.loads((tmp_path / f"robotics/{name}/{kind}-v0/data/textenv.json").read_text())
        assert stored["missions"] == missions and stored["noise"] == noise
        assert stored["seeds"] == [e.seed for e in episodes]


@pytest.mark.parametrize("cls", [RT1Policy, FiLMPolicy])
def test_policies_give_one_action_log_prob_and_value_per_observation(cls):
    env = _token_env()
    torch.manual_seed(0)
    policy = cls(env.observation_space, env.action_space)
    obs = np.stack([env.reset(seed=s)[0] for s in range(5)])
    act = policy.act(obs)
    assert act.action.shape == (5,) and act.logprob.shape == (5,) and act.value.shape == (5,)
    assert act.dist_logprobs.shape == (5, 7)
    assert torch.allclose(act.dist_logprobs.exp().sum(-1), torch.ones(5))
    out = policy.evaluate({"obs": torch.from_numpy(obs), "actions": act.action})
    assert torch.allclose(out.logprob, act.logprob, atol=1e-6)
    out.logprob.sum().backward()
    assert policy.word.weight.grad is not None and policy.word.weight.grad.abs().sum() > 0  # the instruction is read


@pytest.mark.parametrize("name", ["rt1", "film"])
def test_the_instruction_changes_the_action_distribution(name):
    env = _token_env()
    torch.manual_seed(0)
    policy = make_language_policy(name, env.observation_space, env.action_space)
    for p in policy.parameters():  # away from the near-uniform initial actor head
        torch.nn.init.normal_(p, std=0.3) if p.dim() > 1 else None
    obs, _ = env.reset(seed=0)
    other = obs.copy()
    other[148:] = encode_mission("go to the purple key")
    before = policy.action_logits(np.stack([obs, other]))
    assert not torch.allclose(before[0], before[1], atol=1e-4)
    with torch.no_grad():  # padding is read by nobody: the pad embedding (and RT-1's later positions) change nothing
        policy.word.weight[0] += 5 * torch.randn_like(policy.word.weight[0])
        if name == "rt1":
            policy.word_pos[5:] += 5 * torch.randn_like(policy.word_pos[5:])  # 5 words in "go to the X Y"
    assert torch.allclose(policy.action_logits(np.stack([obs, other])), before, atol=1e-5)


def test_policies_refuse_the_text_observation_naming_the_fix():
    env = gym.make(GOTO)
    with pytest.raises(TypeError, match="observation='tokens'"):
        RT1Policy(env.observation_space, env.action_space)
    with pytest.raises(ValueError, match="policy='gpt'"):
        make_language_policy("gpt", _token_env().observation_space, env.action_space)


def test_configs_refuse_bad_values_by_name(tmp_path):
    with pytest.raises(ValueError, match="policy='mlp'"):
        LanguageBCConfig(policy="mlp")
    with pytest.raises(ValueError, match="env_id='Hopper-v5'"):
        LanguageBCConfig(env_id="Hopper-v5")
    with pytest.raises(ValueError, match="noise"):
        LanguageBCConfig(noise=1.5)
    with pytest.raises(ValueError, match="policy='cnn'"):
        ControlPPOConfig(env_id=GOTO, policy="cnn")
    with pytest.raises(FileNotFoundError, match="init_policy"):
        ControlPPOConfig(env_id=GOTO, policy="rt1", init_policy=str(tmp_path / "none.pt"), env_kwargs=TOKENS)
    with pytest.raises(ValueError, match="policy_kwargs"):
        ControlPPOConfig(policy_kwargs={"d_model": 8})
    with pytest.raises(ValueError, match="normalize_obs=True with policy='film'"):
        ControlPPOConfig(env_id=GOTO, policy="film", normalize_obs=True, env_kwargs=TOKENS)
    with pytest.raises(ValueError, match="critic_warmup"):
        ControlPPOConfig(critic_warmup=-1)
    with pytest.raises(ValueError, match="critic_warmup=3 leaves none of the 2 iterations"):
        ControlPPOConfig(total_steps=4096, n_steps=2048, critic_warmup=3)
    with pytest.raises(ValueError, match="gif=True with policy='rt1'"):
        ControlPPOConfig(env_id=GOTO, policy="rt1", gif=True, env_kwargs=TOKENS)
    with pytest.raises(ValueError, match="reads a BabyAI task's token observation"):
        ControlPPOConfig(env_id=GOTO, policy="rt1")
    for bad, match in (({"layers": 0}, "layers=0"), ({"d_model": 10, "heads": 4}, "d_model=10 is not divisible"),
                       ({"learned_tokens": -1}, "learned_tokens=-1"), ({"bogus": 1}, "'bogus'")):
        with pytest.raises(ValueError, match=match):
            LanguageBCConfig(policy_kwargs=bad)
        with pytest.raises(ValueError, match=match):
            ControlPPOConfig(env_id=GOTO, policy="rt1", policy_kwargs=bad)
    with pytest.raises(ValueError, match="film_layers=0"):
        LanguageBCConfig(policy="film", policy_kwargs={"film_layers": 0})
    with pytest.raises(FileNotFoundError, match="dataset='robotics/nothing/bot-v0' is not a local dataset"):
        LanguageBCConfig(dataset="robotics/nothing/bot-v0")
    with pytest.raises(ValueError, match="noise=0.2 with dataset"):
        LanguageBCConfig(dataset="robotics/nothing/bot-v0", noise=0.2)


def _tiny_bc(**overrides):
    fields = dict(demos=30, steps=40, batch_size=32, eval_episodes=0, checkpoint_every=10,
                  policy_kwargs={"d_model": 16, "layers": 1, "heads": 2, "learned_tokens": 4})
    return LanguageBCConfig(**{**fields, **overrides})


def test_bc_resumes_where_it_was_killed_to_the_same_weights(tmp_path, monkeypatch):
    whole = train_language_bc(_tiny_bc(), tmp_path / "whole", progress=False)
    calls = {"n": 0}
    clip = torch.nn.utils.clip_grad_norm_

    def dies_at_step_25(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 25:
            raise KeyboardInterrupt
        return clip(*args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", dies_at_step_25)
    with pytest.raises(KeyboardInterrupt):
        train_language_bc(_tiny_bc(), tmp_path / "killed", progress=False)
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
    resumed = train_language_bc(_tiny_bc(), tmp_path / "killed", progress=False)
    assert [row["iteration"] for row in resumed.rows] == [40]  # a row every 100 steps and at the end
    for name, value in whole.policy.state_dict().items():
        assert torch.equal(value, resumed.policy.state_dict()[name]), name
    for key in ("loss", "accuracy", "lr"):  # the metrics window of steps 1-40 survived the kill
        assert resumed.rows[-1][key] == whole.rows[-1][key], key
    with pytest.raises(ValueError, match="steps"):  # the schedule decays over steps: another count is refused
        train_language_bc(_tiny_bc(steps=60), tmp_path / "killed", progress=False)


def test_ppo_fine_tuning_starts_from_the_cloned_policy(tmp_path):
    bc = train_language_bc(_tiny_bc(), tmp_path / "bc", progress=False)
    config = ControlPPOConfig(env_id=GOTO, env_kwargs={"observation": "tokens"}, policy="rt1",
                              policy_kwargs=_tiny_bc().policy_kwargs, init_policy=str(tmp_path / "bc" / "policy.pt"),
                              total_steps=64, num_envs=2, n_steps=32, batch_size=32, epochs=1, lr=1e-12)
    start = {}

    def first(row, policy):
        start.setdefault("weights", {k: v.clone() for k, v in policy.state_dict().items()})

    train_control_ppo(config, tmp_path / "ppo", progress=False, callback=first)
    for name, value in bc.policy.state_dict().items():  # one update at lr 1e-12 leaves the cloned weights
        assert torch.allclose(value, start["weights"][name], atol=1e-8), name
    seen = []

    def after(row, policy):
        seen.append({k: v.clone() for k, v in policy.state_dict().items()})
        assert all(p.requires_grad for p in policy.parameters())  # unfrozen after each warm-up update

    train_control_ppo(ControlPPOConfig(**{**vars(config), "lr": 1e-2, "critic_warmup": 1, "total_steps": 128}),
                      tmp_path / "warm", progress=False, callback=after)
    for name, value in bc.policy.state_dict().items():  # the warm-up update moved the critic only, the next all
        assert torch.equal(value, seen[0][name]) != name.startswith("critic."), name
        assert not torch.equal(seen[0][name], seen[1][name]) or "bias" in name, name
    with pytest.raises(ValueError, match="does not fit policy='film'"):
        train_control_ppo(ControlPPOConfig(**{**vars(config), "policy": "film", "policy_kwargs": {}}),
                          tmp_path / "ppo-film", progress=False)


def test_critic_warmup_works_for_the_mlp_policy_too(tmp_path):
    seen = []
    config = ControlPPOConfig(env_id="CartPole-v1", total_steps=128, num_envs=1, n_steps=64, batch_size=32, epochs=1,
                              lr=1e-2, critic_warmup=1)
    train_control_ppo(config, tmp_path, progress=False,
                      callback=lambda row, policy: seen.append([p.detach().clone() for p in policy.actor.parameters()]))
    torch.manual_seed(config.seed)
    from agents.policies.mlp import make_mlp_policy

    spaces = gym.make("CartPole-v1")
    initial = list(make_mlp_policy(spaces.observation_space, spaces.action_space, value=True).actor.parameters())
    assert all(torch.equal(a, b) for a, b in zip(initial, seen[0]))  # warm-up: the actor did not move
    assert not all(torch.equal(a, b) for a, b in zip(seen[0], seen[1]))  # then it did


def test_evaluation_is_reproducible_and_deterministic_rates_do_not_depend_on_the_batch():
    env = _token_env()
    torch.manual_seed(0)
    policy = make_language_policy("film", env.observation_space, env.action_space)
    rates = [evaluate_success(policy, GOTO, "train", episodes=7, deterministic=True, batch=b) for b in (1, 3, 32)]
    assert len({(r.success, r.mean_return) for r in rates}) == 1
    state = torch.random.get_rng_state()
    a, b = (evaluate_success(policy, GOTO, "heldout", episodes=9, batch=4) for _ in range(2))
    assert (a.success, a.mean_return) == (b.success, b.mean_return)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's RNG is left alone
    with pytest.raises(ValueError, match="batch"):
        evaluate_success(policy, GOTO, batch=0)


def test_record_episode_writes_a_gif_and_a_strip_with_the_instruction(tmp_path):
    from PIL import Image

    from robotics.language import record_episode

    env = _token_env()
    torch.manual_seed(0)
    policy = make_language_policy("film", env.observation_space, env.action_space)
    out = record_episode(policy, GOTO, str(tmp_path / "episode"), seed=1, split="heldout", frames=4)
    assert mission_split(out["mission"]) == "heldout" and 1 <= out["steps"] <= 64
    assert Image.open(tmp_path / "episode.png").size[0] > 300
    assert Image.open(tmp_path / "episode.gif").n_frames == out["steps"] + 1


def test_the_cli_collects_datasets_and_clones_them(tmp_path, monkeypatch, capsys):
    pytest.importorskip("minari")
    from agents.cli import main

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "data"))
    main(["datasets", "collect-babyai", "--episodes", "10", "--kinds", "bot"])
    assert "robotics/babyai-gotolocal/bot-v0 | 10 |" in capsys.readouterr().out
    main(["train", "bc-language", "--dataset", "robotics/babyai-gotolocal/bot-v0", "--steps", "20", "--batch-size",
          "16", "--eval-episodes", "4", "--policy", "film", "--out", str(tmp_path / "bc")])
    out = capsys.readouterr().out
    assert "success on heldout missions:" in out and (tmp_path / "bc" / "evaluation.json").is_file()


@pytest.mark.slow
def test_cloning_the_bot_on_goto_local_beats_an_untrained_policy_by_far():
    """~30 s: 500 bot demonstrations, 300 steps of the default RT-1 policy. An untrained policy succeeds on about
    a third of GoToLocal's episodes (walking into the target by chance), the clone on about two thirds."""
    env = _token_env()
    torch.manual_seed(0)
    untrained = evaluate_success(make_language_policy("rt1", env.observation_space, env.action_space), GOTO,
                                 "train", episodes=200)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        result = train_language_bc(LanguageBCConfig(demos=500, steps=300, batch_size=128, eval_episodes=200), tmp,
                                   progress=False)
    assert untrained.success < 0.4
    assert result.evaluation["train"].success >= untrained.success + 0.25, (untrained, result.evaluation)
    assert result.evaluation["heldout"].success >= untrained.success + 0.1
