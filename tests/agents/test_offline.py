"""agents.offline: each loss against hand-computed numbers, the networks against plain PyTorch, the replay buffer,
config validation, bootstrapping through terminals and timeouts, seeded determinism and exact resume."""

from __future__ import annotations

import math
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from agents.offline import ALGORITHMS, losses
from agents.offline.algorithms import (
    BCConfig,
    CQLConfig,
    IQLConfig,
    TD3BCConfig,
)
from agents.offline.data import ReplayBuffer
from agents.offline.networks import (
    Ensemble,
    GaussianActor,
    QEnsemble,
    TanhGaussianActor,
    mlp,
    soft_update,
)

T = torch.tensor


# ---------------------------------------------------------------- losses
def test_bc_loss_by_hand():
    # squared errors 0.25, 1, 0, 4 → mean 1.3125
    assert losses.bc_loss(T([[0.5, 0.0], [1.0, -1.0]]), T([[0.0, 1.0], [1.0, 1.0]])).item() == 1.3125


def test_td_target_stops_at_terminals_only():
    rewards, next_v = T([1.0, 2.0, 3.0]), T([10.0, 20.0, 30.0])
    # r + 0.5·(1 − d)·V': 1 + 5, 2 (terminal: no bootstrap), 3 + 15
    for terminals in (T([0.0, 1.0, 0.0]), T([False, True, False])):
        assert losses.td_target(rewards, next_v, terminals, 0.5).tolist() == [6.0, 2.0, 18.0]
    assert losses.td_target(rewards, next_v, T([0.0, 0.0, 0.0]), 0.0).tolist() == [1.0, 2.0, 3.0]


def test_critic_loss_sums_each_critics_mean_squared_error():
    q = T([[1.0, 2.0], [3.0, 4.0]])  # (n=2, B=2)
    # critic 0: (0² + 2²)/2 = 2; critic 1: (2² + 4²)/2 = 10
    assert losses.critic_loss(q, T([1.0, 0.0])).item() == 12.0


def test_expectile_loss_by_hand():
    # 0.7·2² + 0.3·(−1)² + 0.7·0.5² = 2.8 + 0.3 + 0.175 = 3.275, over 3
    assert losses.expectile_loss(T([2.0, -1.0, 0.5]), 0.7).item() == pytest.approx(3.275 / 3)
    assert losses.expectile_loss(T([2.0, -1.0]), 0.5).item() == pytest.approx(0.5 * (4 + 1) / 2)  # half the MSE
    assert losses.expectile_loss(T([-2.0]), 0.9).item() == pytest.approx(0.1 * 4)


def test_awr_weights_are_capped_and_not_differentiated():
    adv = T([0.0, 1.0, 10.0, -1.0], requires_grad=True)
    w = losses.awr_weights(adv, beta=1.0, max_weight=100.0)
    assert w.tolist() == pytest.approx([1.0, math.e, 100.0, math.exp(-1)])  # exp(10) ≈ 22026 capped at 100
    assert not w.requires_grad
    assert losses.awr_weights(T([1.0]), beta=3.0, max_weight=5.0).item() == 5.0  # exp(3) ≈ 20.1 → 5


def test_iql_actor_loss_by_hand():
    logp = T([-1.0, -2.0], requires_grad=True)
    adv = T([0.0, math.log(2.0)], requires_grad=True)
    loss = losses.iql_actor_loss(logp, adv, beta=1.0)
    # −(1·(−1) + 2·(−2))/2 = 2.5
    assert loss.item() == pytest.approx(2.5)
    loss.backward()
    assert logp.grad.tolist() == pytest.approx([-0.5, -1.0])  # −w/B
    assert adv.grad is None  # the weights are constants
    # β = 2 with the cap at 3: weights 1, min(4, 3) = 3 → −(−1 − 6)/2
    assert losses.iql_actor_loss(T([-1.0, -2.0]), T([0.0, math.log(2.0)]), 2.0, 3.0).item() == pytest.approx(3.5)


def test_td3_bc_actor_loss_by_hand_with_lambda_constant():
    q_pi = T([2.0, -4.0], requires_grad=True)
    pi = T([[0.5], [0.0]], requires_grad=True)
    a = T([[0.0], [0.0]])
    loss = losses.td3_bc_actor_loss(q_pi, pi, a, alpha=2.5)
    # λ = 2.5 / mean|Q| = 2.5/3; −λ·mean Q = −(2.5/3)·(−1) = 0.8333; BC: (0.25 + 0)/2 = 0.125
    assert loss.item() == pytest.approx(2.5 / 3 + 0.125)
    loss.backward()
    # ∂/∂Q_i = −λ/B = −2.5/6 for both. Differentiating λ too would add +α·mean Q·sign(Q_i)/(B·mean|Q|²),
    # i.e. −0.1389 and +0.1389: the gradients would differ.
    assert q_pi.grad.tolist() == pytest.approx([-2.5 / 6, -2.5 / 6], abs=1e-6)
    assert pi.grad.flatten().tolist() == pytest.approx([0.5, 0.0])  # 2·(π − a)/N with N = 2 elements


def test_cql_penalty_by_hand_on_one_critic_one_state_one_action():
    q_data = T([[0.5]])  # (E=1, B=1)
    q_random, q_policy, q_next = T([[[1.0]]]), T([[[2.0]]]), T([[[0.0]]])  # (E, B, n=1)
    logp_policy, logp_next = T([[-0.5]]), T([[1.0]])  # (B, n)
    # importance-corrected: uniform density 2^−1 → 1 + log 2; policy 2 − (−0.5) = 2.5; next 0 − 1 = −1
    terms = [1.0 + math.log(2.0), 2.5, -1.0]
    lse = math.log(sum(math.exp(x) for x in terms))
    out = losses.cql_penalty(q_data, q_random, q_policy, logp_policy, q_next, logp_next, action_dim=1)
    assert out.item() == pytest.approx(lse - 0.5, abs=1e-6)
    # temperature 2: 2·logsumexp(x/2) − Q(s, a)
    out = losses.cql_penalty(q_data, q_random, q_policy, logp_policy, q_next, logp_next, 1, temperature=2.0)
    assert out.item() == pytest.approx(2 * math.log(sum(math.exp(x / 2) for x in terms)) - 0.5, abs=1e-6)
    # 3 action dims: the uniform density is 2^−3
    out = losses.cql_penalty(q_data, q_random, q_policy, logp_policy, q_next, logp_next, action_dim=3)
    terms3 = [1.0 + 3 * math.log(2.0), 2.5, -1.0]
    assert out.item() == pytest.approx(math.log(sum(math.exp(x) for x in terms3)) - 0.5, abs=1e-6)
    # two critics sum; two states average
    two = losses.cql_penalty(q_data.repeat(2, 2), q_random.repeat(2, 2, 1), q_policy.repeat(2, 2, 1),
                             logp_policy.repeat(2, 1), q_next.repeat(2, 2, 1), logp_next.repeat(2, 1), 1)
    assert two.item() == pytest.approx(2 * (lse - 0.5), abs=1e-5)


def test_sac_actor_loss_by_hand():
    # mean(0.2·(−1) − 1, 0.2·0.5 − 3) = mean(−1.2, −2.9) = −2.05
    assert losses.sac_actor_loss(T([1.0, 3.0]), T([-1.0, 0.5]), 0.2).item() == pytest.approx(-2.05)
    assert losses.sac_actor_loss(T([1.0, 3.0]), T([-1.0, 0.5]), T(0.2)).item() == pytest.approx(-2.05)


def test_temperature_loss_gradient_by_hand():
    log_alpha = T(0.3, requires_grad=True)
    logp = T([-1.0, -3.0], requires_grad=True)
    loss = losses.temperature_loss(log_alpha, logp, target_entropy=-1.0)
    # −0.3·mean(−1 − 1, −3 − 1) = −0.3·(−3) = 0.9
    assert loss.item() == pytest.approx(0.9)
    loss.backward()
    # ∂/∂log α = −mean(log π + H) = 3 > 0: the entropy (2) is above the target (−1), so descent lowers α
    assert log_alpha.grad.item() == pytest.approx(3.0)
    assert logp.grad is None


def test_dt_loss_ignores_padding():
    pred = T([[[1.0, 1.0], [0.0, 2.0], [100.0, 100.0]]])  # (B=1, K=3, act=2)
    actions = T([[[0.0, 1.0], [0.0, 0.0], [0.0, 0.0]]])
    mask = T([[1.0, 1.0, 0.0]])
    # step errors (1 + 0)/2 = 0.5 and (0 + 4)/2 = 2; the padded step is left out: (0.5 + 2)/2
    assert losses.dt_loss(pred, actions, mask).item() == pytest.approx(1.25)
    assert losses.dt_loss(pred, actions, torch.zeros(1, 3)).item() == 0.0  # nothing real: 0, not NaN


# ---------------------------------------------------------------- networks
def member(ensemble: Ensemble, k: int) -> nn.Sequential:
    """Member ``k`` of ``ensemble`` as an ordinary ``nn.Linear`` stack with the same weights."""
    layers: list[nn.Module] = []
    for i, (w, b) in enumerate(zip(ensemble.weights, ensemble.biases)):
        linear = nn.Linear(w.shape[1], w.shape[2])
        with torch.no_grad():
            linear.weight.copy_(w[k].T)  # the ensemble stores (n, in, out)
            linear.bias.copy_(b[k, 0])
        layers += [linear, nn.ReLU()] if i < len(ensemble.weights) - 1 else [linear]
    return nn.Sequential(*layers)


@pytest.mark.parametrize("n_out", [1, 2])
def test_ensemble_equals_its_members_run_one_by_one(n_out):
    torch.manual_seed(0)
    ens = Ensemble(3, (4, 5), n_out=n_out, n=3)
    x = torch.randn(6, 3)
    out = ens(x)
    assert out.shape == ((3, 6) if n_out == 1 else (3, 6, n_out))
    per_member = torch.randn(3, 6, 3)
    out_each = ens(per_member)
    for k in range(3):
        net = member(ens, k)
        torch.testing.assert_close(out[k], net(x).squeeze(-1) if n_out == 1 else net(x))
        torch.testing.assert_close(out_each[k], net(per_member[k]).squeeze(-1) if n_out == 1 else net(per_member[k]))
    # initialised independently, within nn.Linear's bound 1/√fan_in
    assert not torch.equal(ens.weights[0][0], ens.weights[0][1])
    for w, b in zip(ens.weights, ens.biases):
        bound = 1 / math.sqrt(w.shape[1])
        assert w.abs().max() <= bound and b.abs().max() <= bound


def test_q_ensemble_with_several_actions_per_state_equals_a_loop():
    torch.manual_seed(0)
    q = QEnsemble(obs_dim=3, act_dim=2, hidden=(8,), n=2)
    obs, actions = torch.randn(4, 3), torch.randn(4, 5, 2)  # (B, m, act)
    out = q(obs, actions)
    assert out.shape == (2, 4, 5)
    for j in range(5):
        torch.testing.assert_close(out[:, :, j], q(obs, actions[:, j]))
    for k in range(2):
        torch.testing.assert_close(q(obs, actions[:, 0])[k], member(q, k)(torch.cat([obs, actions[:, 0]], -1)).squeeze(-1))


def test_tanh_gaussian_log_prob_matches_torch_distributions():
    torch.manual_seed(0)
    actor = TanhGaussianActor(3, 2, (16,)).double()
    obs = torch.randn(64, 3, dtype=torch.float64)
    with torch.no_grad():
        actor.net[-1].weight[3].zero_()
        actor.net[-1].bias[3] = 9.0  # log σ of action dim 1 far above the cap of 2
    a, logp = actor.sample(obs)
    mean, log_std = actor.net(obs).chunk(2, dim=-1)
    assert (log_std[:, 1] > 2).all()
    dist = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(mean, log_std.clamp(-5, 2).exp()), torch.distributions.transforms.TanhTransform())
    keep = a.abs().max(-1).values < 1 - 1e-6  # atanh of ±1 is infinite; the rest is well inside
    assert keep.sum() > 16
    torch.testing.assert_close(logp[keep], dist.log_prob(a).sum(-1)[keep], atol=1e-4, rtol=1e-4)
    assert a.abs().max() <= 1
    torch.testing.assert_close(actor(obs), torch.tanh(mean))
    # float32, as trained: the stable formula agrees too
    actor32 = actor.float()
    torch.manual_seed(1)
    a, logp = actor32.sample(obs.float()[:8])
    mean, log_std = actor32.net(obs.float()[:8]).chunk(2, dim=-1)
    torch.manual_seed(1)
    u = mean + log_std.clamp(-5, 2).exp() * torch.randn_like(mean)
    ref = torch.distributions.Normal(mean, log_std.clamp(-5, 2).exp()).log_prob(u).sum(-1)
    ref = ref - torch.distributions.transforms.TanhTransform().log_abs_det_jacobian(u, torch.tanh(u)).sum(-1)
    torch.testing.assert_close(logp, ref, atol=1e-4, rtol=1e-4)


def test_gaussian_actor_log_prob_matches_torch_normal():
    torch.manual_seed(0)
    actor = GaussianActor(3, 2, (16,))
    with torch.no_grad():
        actor.log_std.copy_(T([-0.7, -9.0]))  # the second is clamped to −5
    obs, actions = torch.randn(10, 3), torch.rand(10, 2) * 2 - 1
    ref = torch.distributions.Normal(torch.tanh(actor.net(obs)), T([-0.7, -5.0]).exp()).log_prob(actions).sum(-1)
    torch.testing.assert_close(actor.log_prob(obs, actions), ref)
    torch.testing.assert_close(actor.std(), T([-0.7, -5.0]).exp())
    assert actor.sample(obs).abs().max() <= 1


def test_soft_update_is_polyak_averaging():
    torch.manual_seed(0)
    source, target = mlp(2, (3,), 1), mlp(2, (3,), 1)
    before = [p.clone() for p in target.parameters()]
    soft_update(target, source, 0.25)
    for old, new, src in zip(before, target.parameters(), source.parameters()):
        torch.testing.assert_close(new, 0.75 * old + 0.25 * src)
    soft_update(target, source, 1.0)
    for new, src in zip(target.parameters(), source.parameters()):
        assert torch.equal(new, src)


# ---------------------------------------------------------------- replay buffer
class Data(SimpleNamespace):
    """What ``ReplayBuffer.from_data`` reads of an ``OfflineData``."""

    def __len__(self):
        return len(self.actions)


def dataset(n=5, obs_dim=3, act_dim=2):
    """``n`` transitions, row ``i`` holding ``i`` everywhere; a terminal at 2 and a timeout at 4."""
    i = np.arange(n, dtype=np.float32)
    return Data(observations=np.repeat(i[:, None], obs_dim, 1), actions=np.repeat(i[:, None], act_dim, 1) / 10,
                rewards=i * 2, next_observations=np.repeat(i[:, None], obs_dim, 1) + 0.5,
                terminals=np.isin(np.arange(n), [2]), timeouts=np.isin(np.arange(n), [4]))


def test_buffer_from_data_holds_it_exactly():
    data = dataset()
    buffer = ReplayBuffer.from_data(data, capacity=8)
    assert len(buffer) == 5 and buffer.capacity == 8 and buffer.fixed == 5
    for name in ("observations", "actions", "rewards", "next_observations"):
        assert torch.equal(buffer.tensors[name][:5], torch.from_numpy(getattr(data, name)))
    assert buffer.tensors["terminals"][:5].tolist() == [0.0, 0.0, 1.0, 0.0, 0.0]  # the timeout is not terminal
    assert "timeouts" not in buffer.tensors
    assert len(ReplayBuffer.from_data(data)) == 5 and ReplayBuffer.from_data(data, capacity=2).capacity == 5
    with pytest.raises(ValueError, match="capacity=0"):
        ReplayBuffer(3, 2, 0)


def transition(k):
    return np.full(3, 100.0 + k), np.full(2, 0.5), float(k), np.full(3, 200.0 + k), k % 2 == 1


def test_buffer_grows_then_wraps_over_online_rows_only():
    data = dataset()
    buffer = ReplayBuffer.from_data(data, capacity=8)
    offline = {k: t[:5].clone() for k, t in buffer.tensors.items()}
    for k in range(5):  # rows 5, 6, 7, then 5 and 6 again
        buffer.add(*transition(k))
    assert len(buffer) == 8
    for name, t in offline.items():
        assert torch.equal(buffer.tensors[name][:5], t), name
    assert buffer.tensors["rewards"][5:].tolist() == [3.0, 4.0, 2.0]
    assert buffer.tensors["observations"][5:, 0].tolist() == [103.0, 104.0, 102.0]
    assert buffer.tensors["next_observations"][5:, 0].tolist() == [203.0, 204.0, 202.0]
    assert buffer.tensors["terminals"][5:].tolist() == [1.0, 0.0, 0.0]

    online = ReplayBuffer(3, 2, capacity=2)  # no offline part: plain ring
    for k in range(3):
        online.add(*transition(k))
    assert online.tensors["rewards"].tolist() == [2.0, 1.0] and len(online) == 2


def test_buffer_full_of_offline_data_refuses_to_add():
    buffer = ReplayBuffer.from_data(dataset())  # capacity = the dataset
    with pytest.raises(ValueError, match="all offline data"):
        buffer.add(*transition(0))


def test_sampling_is_seeded_and_stays_within_the_filled_rows():
    data = dataset()
    a, b, c = (ReplayBuffer.from_data(data, capacity=1000, seed=s) for s in (3, 3, 4))
    sa, sb, sc = a.sample(64), b.sample(64), c.sample(64)
    for name in sa:
        assert torch.equal(sa[name], sb[name])
    assert not torch.equal(sa["observations"], sc["observations"])
    assert set(sa["rewards"].tolist()) <= {0.0, 2.0, 4.0, 6.0, 8.0}  # never an empty row
    assert sa["observations"].shape == (64, 3) and sa["terminals"].shape == (64,)
    # rows stay whole: a sampled row's fields belong together
    torch.testing.assert_close(sa["rewards"], 2 * sa["observations"][:, 0])
    torch.testing.assert_close(sa["next_observations"], sa["observations"] + 0.5)


def test_online_state_round_trip():
    data = dataset()
    a = ReplayBuffer.from_data(data, capacity=8, seed=1)
    for k in range(4):  # wrapped once
        a.add(*transition(k))
    a.sample(16)
    state = a.online_state()
    b = ReplayBuffer.from_data(data, capacity=8, seed=99)
    b.load_online_state(state)
    assert (len(b), b._next) == (len(a), a._next)
    for name in a.tensors:
        assert torch.equal(a.tensors[name], b.tensors[name]), name
    sa, sb = a.sample(32), b.sample(32)  # the generator's state came along
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name
    a.add(*transition(9))
    b.add(*transition(9))
    for name in a.tensors:
        assert torch.equal(a.tensors[name], b.tensors[name]), name


# ---------------------------------------------------------------- configs
@pytest.mark.parametrize("config, kwargs, field", [
    (BCConfig, {"lr": -1e-3}, "lr=-0.001"),
    (BCConfig, {"steps": 0}, "steps=0"),
    (BCConfig, {"batch_size": 2.5}, "batch_size=2.5"),
    (BCConfig, {"gamma": 1.5}, "gamma=1.5"),
    (BCConfig, {"hidden": ()}, "hidden=()"),
    (TD3BCConfig, {"tau": 0.0}, "tau=0.0"),
    (TD3BCConfig, {"critic_lr": -1.0}, "critic_lr=-1.0"),
    (IQLConfig, {"expectile": 1.0}, "expectile=1.0"),
    (IQLConfig, {"expectile": 0.0}, "expectile=0.0"),
    (IQLConfig, {"beta": -3.0}, "beta=-3.0"),
    (CQLConfig, {"n_actions": 0}, "n_actions=0"),
    (CQLConfig, {"conservative_weight": -1.0}, "conservative_weight=-1.0"),
])
def test_configs_refuse_bad_values_naming_the_field(config, kwargs, field):
    with pytest.raises(ValueError, match=field.replace("(", r"\(").replace(")", r"\)")):
        config(**kwargs)


def test_every_algorithm_is_registered_under_its_name():
    assert set(ALGORITHMS) == {"bc", "td3bc", "cql", "iql", "dt"}
    assert all(ALGORITHMS[name].name == name for name in ALGORITHMS)


# ---------------------------------------------------------------- the algorithms on a tiny Pendulum dataset
@pytest.fixture(scope="module")
def pendulum(tmp_path_factory):
    """400 random-action Pendulum transitions in episodes of 50, written and loaded through Minari."""
    pytest.importorskip("minari")
    from robotics.datasets import load_dataset, rollout_episodes, write_dataset

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(tmp_path_factory.mktemp("datasets")))
        env = gym.make("Pendulum-v1", max_episode_steps=50)
        env.action_space.seed(0)
        episodes = rollout_episodes(env, lambda obs: env.action_space.sample(), 400, seed=0)
        write_dataset("test/pendulum/random-v0", episodes, "Pendulum-v1", -1500.0, -150.0, "random", "test")
        return load_dataset("test/pendulum/random-v0", env="Pendulum-v1")


TINY = {"hidden": (32, 32), "batch_size": 32, "eval_every": 0, "eval_episodes": 1, "log_every": 50}
CONFIGS = {"bc": BCConfig, "td3bc": TD3BCConfig, "iql": IQLConfig, "cql": lambda **kw: CQLConfig(n_actions=3, **kw)}


def _batch(pendulum):
    """Two transitions of the dataset, the first marked terminal and the second a timeout (terminal 0)."""
    i = [0, 1]
    return {"observations": torch.from_numpy(pendulum.observations[i]), "actions": torch.from_numpy(pendulum.actions[i]),
            "rewards": T([1.0, 2.0]), "next_observations": torch.from_numpy(pendulum.next_observations[i]),
            "terminals": T([1.0, 0.0])}


@pytest.mark.parametrize("name", ["td3bc", "iql", "cql"])
def test_terminals_stop_bootstrapping_and_timeouts_do_not(name, pendulum, monkeypatch):
    seen = []
    real = losses.td_target

    def spy(rewards, next_values, terminals, gamma):
        out = real(rewards, next_values, terminals, gamma)
        seen.append((rewards.clone(), next_values.clone(), out.clone(), gamma))
        return out

    monkeypatch.setattr(losses, "td_target", spy)
    agent = CONFIGS[name](**TINY).create(pendulum)
    agent.update(_batch(pendulum))
    (rewards, next_values, target, gamma), = seen
    scale = agent.reward_scale.item()
    assert rewards.tolist() == pytest.approx([1.0 * scale, 2.0 * scale])
    assert target[0].item() == rewards[0].item()  # the terminal: the reward alone
    assert next_values[1].abs().item() > 0  # the timeout bootstraps a non-zero value
    assert target[1].item() == pytest.approx(rewards[1].item() + gamma * next_values[1].item())
    # the buffer built from a dataset marks terminals only; timeouts bootstrap
    buffer = ReplayBuffer.from_data(pendulum)
    assert pendulum.timeouts.sum() == 8 and pendulum.terminals.sum() == 0
    assert buffer.tensors["terminals"].sum().item() == 0


def _train(name, run_dir, pendulum, resume=True, callback=None, **kwargs):
    from agents.offline.train import train_offline

    config = CONFIGS[name](**{**TINY, "steps": 200, "checkpoint_every": 50, **kwargs})
    return train_offline(config, run_dir, data=pendulum, resume=resume, progress=False, callback=callback)


def _weights(result):
    return {k: v.clone() for k, v in result.algorithm.state_dict().items()}


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"weights differ: {different}"


CLOCK = ("time_s", "steps_per_s")  # wall-clock columns; everything else is a function of the seed


def _without_clock(rows):
    return [{k: v for k, v in row.items() if k not in CLOCK} for row in rows]


@pytest.mark.parametrize("name", ["bc", "td3bc", "iql", "cql"])
def test_training_is_seeded(name, pendulum, tmp_path):
    a = _train(name, tmp_path / "a", pendulum)
    b = _train(name, tmp_path / "b", pendulum)
    c = _train(name, tmp_path / "c", pendulum, seed=1)
    assert [row["iteration"] for row in a.rows] == [50, 100, 150, 200]
    assert _without_clock(a.rows) == _without_clock(b.rows)
    assert "eval_return" in a.rows[-1] and a.final["eval_return"] == a.rows[-1]["eval_return"]
    _assert_same_weights(_weights(a), _weights(b))
    assert _without_clock(a.rows) != _without_clock(c.rows)
    assert (tmp_path / "a" / "model.pt").is_file() and (tmp_path / "a" / "checkpoint" / "policy.pt").is_file()
    act = a.algorithm.act(pendulum.observations[:3])
    assert act.shape == (3, 1) and np.abs(act).max() <= 2.0  # Pendulum's bounds
    assert a.algorithm.act(pendulum.observations[0]).shape == (1,)


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("name", ["bc", "td3bc", "iql", "cql"])
def test_a_crashed_run_resumes_bit_identically(name, pendulum, tmp_path):
    """The same config killed after step 100 (its last checkpoint: step 50) and resumed."""
    full = _train(name, tmp_path / "full", pendulum)

    def crash(row, agent):
        if row["iteration"] == 100:
            raise Interrupt

    with pytest.raises(Interrupt):
        _train(name, tmp_path / "cut", pendulum, callback=crash)
    resumed = _train(name, tmp_path / "cut", pendulum)
    _assert_same_weights(_weights(full), _weights(resumed))
    assert [r["iteration"] for r in resumed.rows] == [50, 100, 150, 200]
    assert _without_clock(full.rows) == _without_clock(resumed.rows)


@pytest.mark.parametrize("name", ["bc", "td3bc", "iql", "cql"])
def test_a_run_extended_to_more_steps_equals_the_longer_run(name, pendulum, tmp_path):
    """Train to 100 steps, then resume with ``steps=200`` (a field a resume may change where nothing depends on it):
    the same weights as 200 steps in one go."""
    full = _train(name, tmp_path / "full", pendulum)
    _train(name, tmp_path / "cut", pendulum, steps=100)
    if name == "iql":  # its cosine LR decay spans `steps`: an extension cannot be exact, so it must be refused
        with pytest.raises(ValueError, match="steps: 100 -> 200"):
            _train(name, tmp_path / "cut", pendulum, steps=200)
        return
    resumed = _train(name, tmp_path / "cut", pendulum, steps=200)
    _assert_same_weights(_weights(full), _weights(resumed))


def test_resume_refuses_a_changed_config(pendulum, tmp_path):
    _train("bc", tmp_path / "run", pendulum, steps=50)
    with pytest.raises(ValueError, match="lr"):
        _train("bc", tmp_path / "run", pendulum, lr=3e-4)


def test_iql_anneals_its_actor_learning_rate_to_zero_over_the_run(pendulum, tmp_path):
    result = _train("iql", tmp_path / "run", pendulum)
    assert result.algorithm.actor_opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert result.algorithm.critic_opt.param_groups[0]["lr"] == 3e-4  # the critics keep theirs


def test_finetune_online_grows_the_buffer_and_logs_the_offline_policy_first(pendulum, tmp_path):
    from agents.offline.train import FinetuneSettings, finetune_online

    config = IQLConfig(**{**TINY, "steps": 50, "checkpoint_every": 50})
    settings = FinetuneSettings(online_steps=60, online_eval_every=30, online_eval_episodes=1, online_checkpoint_every=30, online_actor_lr=1e-4)
    offline, online = finetune_online(config, settings, tmp_path / "run", data=pendulum, progress=False)
    assert [r["iteration"] for r in offline.rows] == [50]
    assert [r["iteration"] for r in online.rows] == [0, 30, 60]
    assert online.rows[0]["eval_return"] == offline.final["eval_return"]  # row 0: the offline policy, same protocol
    assert online.algorithm is offline.algorithm and not online.algorithm.schedulers
    assert online.algorithm.actor_opt.param_groups[0]["lr"] == 1e-4
    state = torch.load(tmp_path / "run" / "online" / "checkpoint" / "trainer_state.pt", weights_only=False)
    assert state["step"] == 60 and state["buffer"]["size"] == len(pendulum) + 60
    assert state["buffer"]["online"]["observations"].shape == (60, 3)
    with pytest.raises(ValueError, match="online_steps=0"):
        FinetuneSettings(online_steps=0)
    with pytest.raises(TypeError, match="explore"):
        finetune_online(BCConfig(**{**TINY, "steps": 50}), settings, tmp_path / "bc", data=pendulum, progress=False)
