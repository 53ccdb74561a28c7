"""agents.core.rollout on tiny fixture envs with a known value function, and once on the real text env."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode

from agents.policies.base import Act
from agents.core.rollout import as_vector_env, collect_steps, run_episodes, start_rollout


class CountEnv(gym.Env):
    """Observation = steps taken so far in the episode; reward 1 per step; terminates after ``length`` steps
    (never if ``length`` is None: wrap it in a TimeLimit to truncate it). ``info["t"]`` is the step count."""

    observation_space = spaces.Box(-np.inf, np.inf, (1,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, length: int | None = 3):
        self.length = length
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        assert self.action_space.contains(int(action))
        self.t += 1
        terminated = self.length is not None and self.t >= self.length
        return np.array([self.t], np.float32), 1.0, terminated, False, {"t": self.t}


def terminating(length=3):
    return lambda: CountEnv(length)


def truncating(max_steps=2):
    return lambda: gym.wrappers.TimeLimit(CountEnv(None), max_episode_steps=max_steps)


class KnownValuePolicy:
    """Deterministic policy with V(obs) = 10 + obs[0]: action = step count mod 2, log-prob = −obs[0]/10."""

    def __init__(self, critic=True):
        self.critic = critic

    @staticmethod
    def _x(obs):
        return torch.as_tensor(np.asarray(obs), dtype=torch.float32).reshape(len(obs), -1)[:, 0]  # (N,)

    def act(self, obs):
        x = self._x(obs)
        return Act(x.long() % 2, -x / 10, self.value(obs) if self.critic else None)

    def value(self, obs):
        return 10.0 + self._x(obs)

    def evaluate(self, batch):  # the protocol's other half; rollouts never call it
        raise NotImplementedError


def vector(*fns, mode=AutoresetMode.SAME_STEP):
    return gym.vector.SyncVectorEnv(list(fns), autoreset_mode=mode)


# ------------------------------------------------------------------------------------------------ collect_steps
# env 0 terminates after 3 steps, env 1 is truncated after 2 by a TimeLimit. Over 7 steps (obs before each step):
#   env 0: obs 0 1 2 | 0 1 2 | 0       terminated at t = 2, 5
#   env 1: obs 0 1 | 0 1 | 0 1 | 0     truncated at t = 1, 3, 5, each from final obs 2: bootstrap V = 12
# After the 7th step both envs are one step into an episode: obs 1, next_value = 11.
def test_collect_steps_keeps_terminated_and_truncated_apart_and_bootstraps_from_the_final_obs():
    envs = vector(terminating(3), truncating(2))
    state = start_rollout(envs, seed=0)
    batch = collect_steps(envs, KnownValuePolicy(), 7, state)
    obs = torch.tensor([[0, 0], [1, 1], [2, 0], [0, 1], [1, 0], [2, 1], [0, 0]], dtype=torch.float32)
    torch.testing.assert_close(batch.obs[..., 0], obs)
    torch.testing.assert_close(batch.values, 10 + obs)
    torch.testing.assert_close(batch.logprobs, -obs / 10)
    torch.testing.assert_close(batch.actions, obs.long() % 2)
    torch.testing.assert_close(batch.rewards, torch.ones(7, 2))
    steps = torch.arange(7)
    assert batch.terminated[:, 0].tolist() == [t in (2, 5) for t in steps]
    assert batch.truncated[:, 1].tolist() == [t in (1, 3, 5) for t in steps]
    assert not batch.truncated[:, 0].any() and not batch.terminated[:, 1].any()  # never merged
    # V(final obs) = 10 + 2 exactly where truncated (not V of the reset obs, 10), 0 elsewhere
    expected = torch.zeros(7, 2)
    expected[[1, 3, 5], 1] = 12.0
    torch.testing.assert_close(batch.bootstrap, expected)
    torch.testing.assert_close(batch.next_value, torch.tensor([11.0, 11.0]))
    # episodes in the order they ended: t=1 env 1, t=2 env 0, t=3 env 1, t=5 env 0 then env 1
    assert batch.episodes.returns == [2.0, 3.0, 2.0, 3.0, 2.0]
    assert batch.episodes.lengths == [2, 3, 2, 3, 2]
    assert [info["t"] for info in batch.episodes.infos] == [2, 3, 2, 3, 2]
    assert batch.episodes.mean("t") == pytest.approx(12 / 5)
    assert np.isnan(batch.episodes.mean("missing"))


def test_collect_steps_carries_running_episodes_across_calls():
    envs = vector(terminating(3), truncating(2))
    state = start_rollout(envs, seed=0)
    first = collect_steps(envs, KnownValuePolicy(), 2, state)
    # after 2 steps env 0 is 2 steps into its episode (return 2 so far), env 1 has finished one
    assert first.episodes.lengths == [2]
    assert state.returns.tolist() == [2.0, 0.0] and state.lengths.tolist() == [2, 0]
    torch.testing.assert_close(first.next_value, torch.tensor([12.0, 10.0]))  # obs 2 and the reset obs 0
    second = collect_steps(envs, KnownValuePolicy(), 5, state)
    # steps 2..6 of the single 7-step rollout above: env 0's first episode (3 steps) ends in this call
    assert second.episodes.returns == [3.0, 2.0, 3.0, 2.0]
    assert second.episodes.lengths == [3, 2, 3, 2]
    expected = torch.zeros(5, 2)
    expected[[1, 3], 1] = 12.0
    torch.testing.assert_close(second.bootstrap, expected)


def test_collect_steps_refuses_next_step_autoreset():
    envs = vector(terminating(3), mode=AutoresetMode.NEXT_STEP)
    with pytest.raises(ValueError, match="SAME_STEP"):
        collect_steps(envs, KnownValuePolicy(), 2, start_rollout(envs, seed=0))


def test_collect_steps_needs_a_critic():
    envs = vector(terminating(3))
    with pytest.raises(ValueError, match="critic"):
        collect_steps(envs, KnownValuePolicy(critic=False), 2, start_rollout(envs, seed=0))


# ------------------------------------------------------------------------------------------------- run_episodes
# env 0 terminates after 3 steps, env 1 after 1, env 2 is truncated after 2 and env 3 after 4: T = 4 (the longest
# episode). Envs 1 and 2 finish early and, autoreset, end again later (env 1 at every step): those later ends
# belong to no episode of the batch and must not show.
LENGTHS = [3, 1, 2, 4]
TERMINATES = torch.tensor([True, True, False, False])


@pytest.mark.parametrize("mode", [AutoresetMode.SAME_STEP, AutoresetMode.NEXT_STEP])
def test_run_episodes_plays_exactly_one_episode_per_env(mode):
    envs = vector(terminating(3), terminating(1), truncating(2), truncating(4), mode=mode)
    batch = run_episodes(envs, KnownValuePolicy(), seed=0)
    steps = torch.arange(4)[:, None]  # (T, 1)
    valid = steps < torch.tensor(LENGTHS)  # (T, N)
    assert batch.valid.tolist() == valid.tolist()
    assert batch.lengths.tolist() == LENGTHS
    # reward 1 per step of the episode, 0 after it ended (the autoreset episodes' rewards are dropped)
    torch.testing.assert_close(batch.rewards, valid.float())
    torch.testing.assert_close(batch.returns, torch.tensor([3.0, 1.0, 2.0, 4.0]))
    last = steps == torch.tensor(LENGTHS) - 1  # (T, N), each episode's last step
    assert batch.terminated.tolist() == (last & TERMINATES).tolist()
    assert batch.truncated.tolist() == (last & ~TERMINATES).tolist()
    # the final observation is the episode's own last one (obs = its length), not a reset observation
    assert [float(o[0]) for o in batch.final_obs] == [3.0, 1.0, 2.0, 4.0]
    assert [info["t"] for info in batch.infos] == LENGTHS
    assert np.asarray(batch.first_obs).tolist() == [[0.0]] * 4
    assert batch.values.shape == (4, 4)
    # env 0 acts on obs 0, 1, 2 and then, after its episode, on the reset obs 0 (same-step) or on the final obs 3
    # that next-step autoreset leaves in place for one more step
    after = 10.0 if mode == AutoresetMode.SAME_STEP else 13.0
    torch.testing.assert_close(batch.values[:, 0], torch.tensor([10.0, 11.0, 12.0, after]))


def test_run_episodes_without_a_critic_gives_no_values():
    batch = run_episodes(vector(terminating(2)), KnownValuePolicy(critic=False), seed=0)
    assert batch.values is None and batch.lengths.tolist() == [2]


def test_run_episodes_stops_at_max_steps():
    with pytest.raises(RuntimeError, match="1 episodes still running after max_steps=5"):
        run_episodes(vector(terminating(3), lambda: CountEnv(None)), KnownValuePolicy(), seed=0, max_steps=5)


def test_as_vector_env_wraps_a_single_env():
    single = CountEnv(3)
    envs = as_vector_env(single)
    assert isinstance(envs, gym.vector.SyncVectorEnv) and envs.num_envs == 1 and envs.envs[0] is single
    assert envs.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    already = vector(terminating(3))
    assert as_vector_env(already) is already
    with pytest.raises(TypeError, match="got int"):
        as_vector_env(3)
    # run_episodes wraps it itself
    batch = run_episodes(CountEnv(3), KnownValuePolicy(), seed=0)
    assert batch.lengths.tolist() == [3] and batch.returns.tolist() == [3.0] and batch.terminated[2, 0]


# ---------------------------------------------------------------------------------------------- the text env
def test_run_episodes_on_the_text_env_matches_teacher_forced_logprobs():
    import textenv  # noqa: F401  (registers the ids)
    from agents.policies.lm import LMPolicy
    from agents.core.onpolicy import training_batch
    from textenv import world

    env = gym.make_vec("textenv/Sentiment-v0", num_envs=4, max_new_tokens=6, autoreset_mode="disabled")
    policy = LMPolicy.from_pretrained(world.lm_path(progress=False))
    # prompts of different lengths; with seed 0 the first completion ends with EOS after 4 tokens, the others
    # hit the 6-token cap, so the valid mask and the right padding both matter below
    prompts = ["my friend theo told me about", "we booked this salon over", "i borrowed this novel while visiting",
               "although the"]

    def play():
        policy.generator = torch.Generator().manual_seed(0)
        return run_episodes(env, policy, seed=0, options={"prompts": prompts})

    episodes = play()
    assert episodes.actions.shape[1] == 4 and episodes.actions.shape[0] <= 6
    lengths = episodes.lengths.tolist()
    assert all(1 <= n <= 6 for n in lengths)
    assert min(lengths) < 6, f"lengths {lengths}: pick prompts where one completion ends early (EOS)"
    assert (episodes.rewards[~episodes.valid] == 0).all()
    assert [info["prompt"] for info in episodes.infos] == prompts
    assert all("completion" in info and "score" in info for info in episodes.infos)
    assert [int(info["num_tokens"]) for info in episodes.infos] == lengths
    # each episode ends exactly once, on its last valid step, by EOS (terminated) or the token cap (truncated)
    ended = episodes.terminated | episodes.truncated
    assert not (episodes.terminated & episodes.truncated).any()
    assert ended.sum(0).tolist() == [1] * 4
    assert (ended.float().argmax(0) + 1).tolist() == lengths
    for i, n in enumerate(lengths):
        if n < 6:  # only EOS ends a completion before the cap
            assert episodes.terminated[n - 1, i]
        if episodes.truncated[n - 1, i]:  # only the cap truncates
            assert n == 6

    batch = training_batch(episodes, True)
    with torch.no_grad():
        scored = policy.evaluate(batch)
    mask = batch["mask"]  # (N, T)
    torch.testing.assert_close(scored.logprob[mask], episodes.logprobs.T[mask], atol=1e-4, rtol=0.0)

    again = play()
    assert [i["completion"] for i in again.infos] == [i["completion"] for i in episodes.infos]
    assert torch.equal(again.actions, episodes.actions)
