"""``kl_timing="end"``: the reference scores a finished completion in one teacher-forced pass; the per-token KL
values, the episode KL, β's updates and (after :func:`agents.core.rollout.spread_end_kl`) the per-token rewards
equal those of ``kl_timing="step"``."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

import textenv
from agents.core.rollout import run_episodes, spread_end_kl

ID = "textenv/Sentiment-v1"


def length_reward(prompts, completions):
    return [0.1 * len(c) for c in completions]


def _play(timing, estimator="k1", mode="policy", num_envs=3, steps=14, temperature=1.0, seed=0):
    """Same-step autoreset, a fixed stream of random policy distributions and actions (EOS forced now and then,
    so episodes end at different steps); per finished episode: its per-token rewards' KL part, per-token KL
    (policy mode), summed KL term and return."""
    env = gym.make_vec(ID, num_envs=num_envs, kl_coef=0.2, kl_estimator=estimator, kl_mode=mode, kl_timing=timing,
                       kl_temperature=temperature, max_new_tokens=5, reward_model=length_reward)
    task = env.unwrapped.task
    rng = torch.Generator().manual_seed(seed)
    env.reset(seed=seed)
    per_token = [[] for _ in range(num_envs)]  # this episode's KL terms so far (step mode) per env
    kl_so_far = [[] for _ in range(num_envs)]
    returns = np.zeros(num_envs)
    episodes = []
    for t in range(steps):
        logits = torch.randn(num_envs, task.vocab_size, generator=rng) * 2
        logprobs = torch.log_softmax(logits, -1)  # (N, V)
        actions = torch.multinomial(logprobs.exp(), 1, generator=rng).squeeze(1)
        if t % 4 == 1:
            actions[t % num_envs] = task.eos_token_id
        textenv.supply_policy_logprobs(env, logprobs)
        _, reward, terminated, truncated, info = env.step(actions)
        returns += reward
        for i in range(num_envs):
            if timing == "step":
                per_token[i].append(info["reward_kl"][i])
                if mode == "policy":
                    kl_so_far[i].append(info["kl"][i])
            else:
                assert (info["reward_kl"][i] == 0.0) == (not (terminated[i] or truncated[i]))  # sum only at the end
        for i in np.flatnonzero(terminated | truncated):
            final = info["final_info"]
            row = {"return": returns[i], "reward_kl": final["reward_kl"][i],
                   "tokens": per_token[i] if timing == "step" else final["reward_kl_tokens"][i],
                   "kl": kl_so_far[i] if timing == "step" else (final["kl_tokens"][i] if mode == "policy" else None),
                   "episode_kl": final["episode_kl"][i] if mode == "policy" else None}
            assert final["kl_timing"][i] == timing
            episodes.append(row)
            per_token[i], kl_so_far[i], returns[i] = [], [], 0.0
    return episodes


@pytest.mark.parametrize("estimator,mode,temperature", [("k1", "policy", 1.0), ("k3", "policy", 0.7),
                                                        ("full", "policy", 1.0), ("k1", "reference", 1.0)])
def test_end_timing_gives_the_step_timings_per_token_values_and_returns(estimator, mode, temperature):
    step = _play("step", estimator, mode, temperature=temperature)
    end = _play("end", estimator, mode, temperature=temperature)
    assert len(step) == len(end) >= 6
    assert {len(e["tokens"]) for e in end} >= {2, 5}  # EOS endings and cap endings
    for s, e in zip(step, end):
        np.testing.assert_allclose(e["tokens"], s["tokens"], rtol=1e-5, atol=1e-6)
        assert e["reward_kl"] == pytest.approx(sum(s["tokens"]), rel=1e-6, abs=1e-5)
        assert e["return"] == pytest.approx(s["return"], rel=1e-6, abs=1e-5)  # the same episode return, KL all at the end
        if mode == "policy":
            np.testing.assert_allclose(e["kl"], s["kl"], rtol=1e-5, atol=1e-6)
            assert e["episode_kl"] == pytest.approx(s["episode_kl"], rel=1e-6, abs=1e-5)
            np.testing.assert_allclose(e["tokens"], -0.2 * np.asarray(e["kl"]), rtol=1e-6, atol=1e-7)


def test_end_timing_runs_no_reference_forward_until_an_episode_ends():
    env = gym.make_vec(ID, num_envs=2, kl_coef=0.1, kl_timing="end", max_new_tokens=4, reward_model=length_reward,
                       autoreset_mode="disabled")
    calls = []
    env.ref_model.register_forward_hook(lambda *args: calls.append(1))
    env.reset(seed=0)
    assert env.ref is None and not calls
    V = env.unwrapped.task.vocab_size
    eos = env.unwrapped.task.eos_token_id
    word = (eos + 1) % V
    for t in range(4):
        textenv.supply_policy_logprobs(env, torch.full((2, V), -math.log(V)))
        env.step(np.array([word, eos if t == 2 else word]))
        assert len(calls) == (0 if t < 2 else 1 if t == 2 else 2)  # one pass per step in which episodes end


def test_single_env_end_timing_matches_the_single_env_step_timing():
    out = {}
    for timing in ("step", "end"):
        env = gym.make(ID, kl_coef=0.3, kl_timing=timing, max_new_tokens=6, reward_model=length_reward)
        env.reset(seed=3)
        rng = torch.Generator().manual_seed(1)
        V = env.unwrapped.task.vocab_size
        rewards, done, info = [], False, {}
        while not done:
            logprobs = torch.log_softmax(torch.randn(V, generator=rng), -1)
            action = int(torch.multinomial(logprobs.exp(), 1, generator=rng))
            textenv.supply_policy_logprobs(env, logprobs)
            _, r, terminated, truncated, info = env.step(action)
            rewards.append(r)
            done = terminated or truncated
        out[timing] = (rewards, info)
    (step_rewards, step_info), (end_rewards, end_info) = out["step"], out["end"]
    assert sum(end_rewards) == pytest.approx(sum(step_rewards), abs=1e-5)
    assert end_info["episode_kl"] == pytest.approx(step_info["episode_kl"], abs=1e-5)
    assert end_info["kl_timing"] == "end" and len(end_info["kl_tokens"]) == len(step_rewards)
    spread = spread_end_kl(np.array(end_rewards)[:, None], [end_info])[:, 0]
    np.testing.assert_allclose(spread, step_rewards, atol=1e-5)


def test_run_episodes_puts_the_kl_back_on_its_tokens(base_lm):
    """The agents' rollout with kl_timing="end" gives the rewards of kl_timing="step", token by token."""
    from agents.policies.lm import LMPolicy

    batches = {}
    for timing in ("step", "end"):
        policy = LMPolicy(base_lm, temperature=1.3)  # sampling at 1.3 against the same model: KL > 0
        policy.generator = torch.Generator().manual_seed(0)
        env = gym.make_vec(ID, num_envs=4, autoreset_mode="disabled", kl_coef=0.1, kl_timing=timing,
                           max_new_tokens=6, reward_model=length_reward)
        batches[timing] = run_episodes(env, policy, seed=0)
    step, end = batches["step"], batches["end"]
    assert torch.equal(step.actions, end.actions)
    assert step.rewards.abs().sum() > 0 and (step.rewards[:-1] != 0).any()  # KL on every token, not only the last
    torch.testing.assert_close(end.rewards, step.rewards, rtol=1e-5, atol=1e-5)


def test_adaptive_beta_sees_the_same_episode_kls():
    betas = {}
    for timing in ("step", "end"):
        env = gym.make_vec(ID, num_envs=4, kl_coef=0.1, kl_target=0.5, kl_horizon=8, kl_timing=timing,
                           max_new_tokens=3, reward_model=length_reward, autoreset_mode="disabled")
        env.reset(seed=0)
        V = env.unwrapped.task.vocab_size
        for t in range(3):
            textenv.supply_policy_logprobs(env, torch.full((4, V), -math.log(V)))  # uniform policy: KL > 0
            env.step(np.arange(4) + 5 + t)
        betas[timing] = textenv.kl_controller(env).end_batch()
    assert betas["end"] == pytest.approx(betas["step"], rel=1e-9) and betas["end"] != 0.1


def test_bad_kl_timing_is_refused_at_make_naming_it():
    with pytest.raises(ValueError, match=r"kl_timing='later'.*\('step', 'end'\)"):
        gym.make_vec(ID, num_envs=2, kl_coef=0.1, kl_timing="later", reward_model=length_reward)
    with pytest.raises(ValueError, match=r"kl_timing='later'"):
        gym.make(ID, kl_coef=0.1, kl_timing="later", reward_model=length_reward)


def test_missing_or_bad_supply_is_refused_before_the_step_with_end_timing():
    env = gym.make_vec(ID, num_envs=2, kl_coef=0.1, kl_timing="end", max_new_tokens=3, reward_model=length_reward)
    env.reset(seed=0)
    before = env.unwrapped.gen_len.clone()
    with pytest.raises(RuntimeError, match="supply_policy_logprobs"):
        env.step(np.array([5, 6]))
    textenv.supply_policy_logprobs(env, torch.tensor([float("nan"), -1.0]))
    with pytest.raises(ValueError, match=r"env 0 .*nan"):
        env.step(np.array([5, 6]))
    assert torch.equal(env.unwrapped.gen_len, before)  # nothing stepped


class Forbid(torch.nn.Module):
    """A reference that gives token 7 probability 0: in every pass, or (``passes``) in the first ones only."""

    def __init__(self, lm, passes: int | None = None):
        super().__init__()
        self.lm, self.config, self.passes = lm, lm.config, passes

    def forward(self, **kwargs):
        out = self.lm(**kwargs)
        if self.passes is None or self.passes > 0:
            out.logits[..., 7] = -math.inf
        if self.passes is not None:
            self.passes -= 1
        return out


def test_a_reference_forbidding_a_sampled_token_is_named_at_the_episode_end(base_lm):
    env = gym.make_vec(ID, num_envs=1, kl_coef=0.1, kl_timing="end", max_new_tokens=2, reward_model=length_reward,
                       ref_model=Forbid(base_lm))
    env.reset(seed=0)
    V = env.unwrapped.task.vocab_size
    textenv.supply_policy_logprobs(env, torch.full((1, V), -math.log(V)))
    env.step(np.array([7]))
    textenv.supply_policy_logprobs(env, torch.full((1, V), -math.log(V)))
    with pytest.raises(ValueError, match=r"env 0, completion token 0, the reference gives token 7 probability 0"):
        env.step(np.array([8]))


def test_a_passed_reference_module_is_not_frozen_or_switched_to_eval(base_lm):
    """A module passed as ref_model may share weights with the policy (LoRA's adapter-off base): left as it is."""
    import copy

    module = copy.deepcopy(base_lm).train()
    env = gym.make_vec(ID, num_envs=1, kl_coef=0.1, ref_model=module, reward_model=length_reward)
    assert env.ref_model is module and module.training
    assert all(p.requires_grad for p in module.parameters())


def test_a_sync_vector_env_of_single_envs_carries_per_token_values_of_any_length():
    """Gymnasium's SyncVectorEnv stacks array infos to the first env's shape; the per-token values are lists, so
    episodes of different lengths ending in the same step keep their own lengths, and run_episodes spreads them."""
    from agents.policies.base import Act

    class Scripted:
        """Words, and EOS at the steps of ``EOS``: env 0's second episode (after the SyncVectorEnv's next-step
        autoreset) ends in the same step as env 1's first, 2 and 4 tokens long; fixed random log-probs."""

        EOS = {0: (0, 3), 1: (3,), 2: (4,)}

        def __init__(self, task):
            self.task, self.t = task, 0
            self.logprobs = torch.log_softmax(torch.randn(3, task.vocab_size, generator=torch.Generator().manual_seed(0)), -1)

        def act(self, obs):
            word = (self.task.eos_token_id + 1) % self.task.vocab_size
            action = torch.tensor([self.task.eos_token_id if self.t in self.EOS[i] else word for i in range(3)])
            self.t += 1
            return Act(action, self.logprobs.gather(1, action[:, None]).squeeze(1), None, self.logprobs)

    batches = {}
    for timing in ("step", "end"):
        env = gym.make_vec(ID, num_envs=3, vectorization_mode="sync", kl_coef=0.1, kl_timing=timing,
                           max_new_tokens=6, reward_model=length_reward)
        batches[timing] = run_episodes(env, Scripted(env.envs[0].unwrapped.task), seed=0)
    step, end = batches["step"], batches["end"]
    assert end.lengths.tolist() == [1, 4, 5]
    for i, info in enumerate(end.infos):
        assert len(info["reward_kl_tokens"]) == int(end.lengths[i])
    assert (step.rewards[:-1] != 0).any()
    torch.testing.assert_close(end.rewards, step.rewards, rtol=1e-5, atol=1e-5)


def test_an_episode_cut_outside_the_kl_wrapper_warns_that_its_kl_was_dropped():
    env = gym.make(ID, kl_coef=0.5, kl_timing="end", max_new_tokens=8, max_episode_steps=2, reward_model=length_reward)
    env.reset(seed=0)
    V = env.unwrapped.task.vocab_size
    word = (env.unwrapped.task.eos_token_id + 1) % V
    for _ in range(2):
        textenv.supply_policy_logprobs(env, torch.full((V,), -math.log(V)))
        _, _, terminated, truncated, _ = env.step(word)
    assert truncated and not terminated  # the TimeLimit around the env cut it
    with pytest.warns(RuntimeWarning, match=r"kl_timing='end': env\(s\) \[0\] restarted in the middle of an episode"):
        env.reset(seed=1)


def test_after_a_refusal_at_the_episode_end_the_next_episodes_score_normally(base_lm):
    env = gym.make_vec(ID, num_envs=1, kl_coef=0.1, kl_timing="end", max_new_tokens=2, reward_model=length_reward,
                       ref_model=Forbid(base_lm, passes=1))
    env.reset(seed=0)
    V = env.unwrapped.task.vocab_size
    uniform = torch.full((1, V), -math.log(V))
    textenv.supply_policy_logprobs(env, uniform)
    env.step(np.array([7]))
    textenv.supply_policy_logprobs(env, uniform)
    with pytest.raises(ValueError, match="probability 0"):
        env.step(np.array([8]))
    for t in range(2):  # the env restarted the row (same-step autoreset): the wrapper follows it
        textenv.supply_policy_logprobs(env, uniform)
        _, _, terminated, _, info = env.step(np.array([8]))
    assert terminated[0] and len(info["final_info"]["kl_tokens"][0]) == 2
