"""The algorithms learn (fixed seeds, thresholds well above the untrained policy), resume exactly, and fail clearly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents import LMPolicy, PGConfig, PPOConfig, TrainingDiverged, train_pg, train_ppo
from agents.text.evaluation import best_of_n, best_of_n_kl, eval_prompts, generate, win_rate
from agents.core.onpolicy import train

EVAL = 128


@pytest.fixture(scope="module")
def base_samples(lm_dir):
    base = LMPolicy.from_pretrained(lm_dir)
    return base, generate(base, eval_prompts(EVAL), seed=1)


def _gain(policy, base_samples):
    base, before = base_samples
    after = generate(policy, eval_prompts(EVAL), reference=base, seed=1)
    return after.summary()["gold"] - before.summary()["gold"], after.summary()


def test_reinforce_solves_the_bandit(tmp_path):
    config = PGConfig(env_id="textenv/Bandit-v0", estimator="reinforce", iterations=30, prompts_per_iter=4, group_size=8,
                      lr=1e-2, kl_coef=0.0)
    result = train_pg(config, tmp_path)
    obs = torch.zeros(1, 1)
    assert result.policy.probs(obs)[0, 0] > 0.95  # P(A); the untrained policy is at 0.5:
    from agents.core.onpolicy import make_env, make_policy

    untrained = make_policy(config, make_env(config), value_head=False)
    assert abs(float(untrained.probs(obs)[0, 0]) - 0.5) < 0.05


@pytest.mark.slow
def test_ppo_raises_gold_with_bounded_kl(tmp_path, base_samples):
    result = train_ppo(PPOConfig(iterations=12, prompts_per_iter=32, lr=3e-4, seed=0), tmp_path, progress=False)
    gain, after = _gain(result.policy, base_samples)
    assert gain > 0.25, after  # measured +0.68 (s.e. about 0.06)
    assert after["kl"] < 15.0, after  # measured 7.5 nats
    rows = result.rows
    assert rows[-1]["kl"] < 10 and all(np.isfinite([r["gold"] for r in rows]))


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ["grpo", "rloo"])
def test_group_estimators_raise_gold(tmp_path, base_samples, estimator):
    config = PGConfig(estimator=estimator, iterations=15, prompts_per_iter=8, group_size=4, lr=1e-3, seed=0)
    gain, after = _gain(train_pg(config, tmp_path, progress=False).policy, base_samples)
    assert gain > 0.3, after  # measured: GRPO +0.71, RLOO +0.62 (s.e. of each mean about 0.06)


@pytest.mark.slow
def test_dpo_beats_the_base_model_by_gold(tmp_path, lm_dir):
    from agents.text.dpo import DPOConfig, train_dpo

    path = train_dpo(DPOConfig(max_pairs=3000, lr=5e-4, seed=0), tmp_path, progress=False)
    prompts = eval_prompts(256)
    before = generate(LMPolicy.from_pretrained(lm_dir), prompts, seed=1)
    after = generate(LMPolicy.from_pretrained(path), prompts, seed=1)
    result = win_rate(after.gold, before.gold)
    assert result["rate"] > 0.62, result  # measured 0.70 (s.e. about 0.03); the base against itself is at 0.5


def test_sft_shifts_likelihood_towards_the_demonstrated_mood(tmp_path, lm_dir):
    from agents.policies.lm import sequence_batch
    from agents.core.losses import masked_mean
    from agents.text.sft import SFTConfig, train_sft
    from textenv.world.demos import sample_demonstrations

    positive, negative = sample_demonstrations(64, seed=999), sample_demonstrations(64, seed=999, mood="negative")

    def nll(policy, demos):
        batch = sequence_batch(policy.tokenizer, [d["prompt"] for d in demos], [d["completion"] for d in demos], add_eos=True)
        with torch.no_grad():
            return -float(masked_mean(policy.evaluate(batch, with_values=False).logprob, batch["mask"]))

    def margin(policy):  # how much likelier (per token) held-out positive reviews are than negative ones
        return nll(policy, negative) - nll(policy, positive)

    path = train_sft(SFTConfig(num_demos=512, epochs=2, batch_size=32, lr=1e-3), tmp_path, progress=False)
    assert margin(LMPolicy.from_pretrained(path)) > margin(LMPolicy.from_pretrained(lm_dir)) + 0.05  # measured +0.084


def _small_ppo(**changes):
    return PPOConfig(**{**dict(iterations=4, prompts_per_iter=8, max_new_tokens=8, minibatch_rows=4, epochs=2,
                               checkpoint_every=2, kl_target=2.0, seed=3), **changes})


def test_same_seed_same_numbers_and_resume_is_exact(tmp_path):
    straight = train_ppo(_small_ppo(), tmp_path / "a", progress=False)
    again = train_ppo(_small_ppo(), tmp_path / "b", progress=False)
    assert straight.rows == [{**r, "time_s": s["time_s"]} for r, s in zip(again.rows, straight.rows)]
    train_ppo(_small_ppo(iterations=2), tmp_path / "c", progress=False)  # "interrupted" after 2 iterations
    resumed = train_ppo(_small_ppo(), tmp_path / "c", progress=False)
    drop = lambda rows: [{k: v for k, v in r.items() if k != "time_s"} for r in rows]
    assert drop(resumed.rows) == drop(straight.rows)  # adaptive β's controller state was restored too
    for p, q in zip(resumed.policy.parameters(), straight.policy.parameters()):
        assert torch.equal(p, q)
    assert (tmp_path / "c" / "metrics.csv").read_text().count("\n") == 5


def test_resume_refuses_a_changed_config_and_an_incomplete_checkpoint(tmp_path):
    train_ppo(_small_ppo(iterations=2), tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"different config \(lr: 0.0001 -> 0.001\)"):
        train_ppo(_small_ppo(lr=1e-3), tmp_path, progress=False)
    (tmp_path / "checkpoint" / "trainer_state.pt").unlink()
    with pytest.raises(FileNotFoundError, match="trainer_state.pt"):
        train_ppo(_small_ppo(), tmp_path, progress=False)


def test_nan_losses_are_skipped_then_the_run_stops(tmp_path, lm_dir):
    config = _small_ppo(max_skipped=2, kl_target=None)
    before = [p.detach().clone() for p in LMPolicy.from_pretrained(lm_dir).model.parameters()]
    nan = lambda policy, rng: (lambda: torch.tensor(float("nan")))
    with pytest.raises(TrainingDiverged, match="max_skipped=2"):
        train(config, tmp_path, progress=False, value_head=True, extra_loss_factory=nan)
    saved = LMPolicy.from_pretrained(tmp_path / "checkpoint" / "policy")
    for p, q in zip(saved.model.parameters(), before):  # no NaN ever reached the weights
        assert torch.equal(p, q)


def test_kl_blow_up_skips_the_update(tmp_path):
    config = _small_ppo(max_skipped=0, kl_target=None, max_episode_kl=1e-6, lr=1e-3)
    with pytest.warns(RuntimeWarning, match="exceeds max_episode_kl"), pytest.raises(TrainingDiverged, match="1 updates skipped"):
        train_ppo(config, tmp_path, progress=False)
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3  # header, iteration 1 (KL 0: trained), iteration 2 (KL > 0: skipped, then the stop)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lr": -1.0}, r"lr=-1.0 is out of range; expected a number > 0"),
        ({"iterations": 0}, r"iterations=0 is out of range; expected an integer >= 1"),
        ({"gamma": 1.5}, r"gamma=1.5 is out of range; expected a number >= 0 and <= 1"),
        ({"kl_estimator": "k9"}, r"kl_estimator='k9'"),
        ({"env_id": "textenv/Nope-v0"}, r"env_id='textenv/Nope-v0' is not registered; textenv ids: \["),
        ({"kl_target": 1.0, "kl_coef": 0.0}, r"kl_target \(adaptive β\) needs an initial kl_coef > 0"),
    ],
)
def test_config_errors_name_the_field_and_range(changes, message):
    with pytest.raises(ValueError, match=message):
        PPOConfig(**changes)


def test_group_config_errors():
    with pytest.raises(ValueError, match="estimator='ppo'"):
        PGConfig(estimator="ppo")
    with pytest.raises(ValueError, match="group_size=1 is out of range for rloo"):
        PGConfig(estimator="rloo", group_size=1)


def test_policy_and_env_vocabularies_must_match(tmp_path, lm_dir):
    from transformers import GPT2Config, GPT2LMHeadModel

    other = tmp_path / "other"
    GPT2LMHeadModel(GPT2Config(vocab_size=300, n_layer=1, n_embd=16, n_head=2)).save_pretrained(other)
    LMPolicy.from_pretrained(lm_dir).tokenizer.save_pretrained(other)
    config = PPOConfig(iterations=1, prompts_per_iter=2, env_kwargs={"ref_model": str(lm_dir)})
    from agents.core.onpolicy import make_env, make_policy

    env = make_env(config)
    with pytest.raises(ValueError, match=r"policy vocabulary 300 .* differs from the env's"):
        make_policy(config, env, value_head=True, path=other)


def test_best_of_n_kl_and_monotone_proxy(lm_dir):
    assert best_of_n_kl(1) == 0.0
    assert best_of_n_kl(2) == pytest.approx(np.log(2) - 0.5)
    rows = best_of_n(LMPolicy.from_pretrained(lm_dir), eval_prompts(16), ns=(1, 2, 4))
    proxies = [r["proxy"] for r in rows]
    assert proxies == sorted(proxies) and proxies[-1] > proxies[0]  # nested maxima over the same samples
    with pytest.raises(ValueError, match="n=0 must be >= 1"):
        best_of_n_kl(0)


def test_value_warmup_trains_only_the_value_head(tmp_path, lm_dir):
    result = train_ppo(_small_ppo(iterations=1, value_warmup_iters=1, kl_target=None), tmp_path, progress=False)
    base = LMPolicy.from_pretrained(lm_dir)
    for p, q in zip(result.policy.model.parameters(), base.model.parameters()):
        assert torch.equal(p, q)  # the LM did not move...
    torch.manual_seed(3)  # ...while the value head did (same seed and loading order as make_policy)
    initial = LMPolicy.from_pretrained(lm_dir, value_head=True).value_head
    assert not torch.equal(result.policy.value_head.weight, initial.weight)


def test_target_kl_stops_the_epochs_early(tmp_path):
    rows = train_ppo(_small_ppo(iterations=2, epochs=4, target_kl=1e-9, kl_target=None), tmp_path, progress=False).rows
    assert all(r["epochs"] == 1 for r in rows)  # the first minibatch already exceeds 1.5·target_kl


def test_adaptive_beta_follows_ziegler_once_per_batch_with_the_batch_mean_kl(tmp_path):
    """β of iteration i+1 = β_i·(1 + clip(KL_i/target − 1, ±0.2)·n/horizon), KL_i the batch's logged mean summed KL
    and n its 8 episodes: one update per batch (Ziegler et al. 2019), not one per group of envs finishing together."""
    target, horizon, n = 0.05, 40, 8
    rows = train_ppo(_small_ppo(iterations=4, kl_coef=0.1, kl_target=target, kl_horizon=horizon, lr=1e-3), tmp_path,
                     progress=False).rows
    assert rows[0]["beta"] == 0.1  # the first rollout is shaped with the initial β
    for before, after in zip(rows, rows[1:]):
        error = min(max(before["kl"] / target - 1.0, -0.2), 0.2)
        assert after["beta"] == pytest.approx(before["beta"] * (1 + error * n / horizon), rel=1e-12)
    assert len({row["beta"] for row in rows}) > 1  # β did move


def test_ptx_adds_a_pretraining_loss(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the pasta was great .\nthe room was clean .\n")
    rows = train_ppo(_small_ppo(iterations=1, ptx_coef=0.5, ptx_data=str(corpus), kl_target=None), tmp_path / "run",
                     progress=False).rows
    assert 0 < rows[0]["ptx_loss"] < 50
    with pytest.raises(FileNotFoundError, match="ptx_data='nope.txt' is not a file"):
        train_ppo(_small_ppo(ptx_coef=0.5, ptx_data="nope.txt"), tmp_path / "bad", progress=False)


def test_ipo_trains_and_checkpoints(tmp_path):
    """IPO trains end to end and checkpoints its last step (interrupted-and-resumed runs: tests/agents/test_resume.py)."""
    from agents.text.dpo import DPOConfig, train_dpo
    from agents.core.run import STATE

    config = DPOConfig(loss_type="ipo", max_pairs=64, batch_size=16, checkpoint_every=2)
    path = train_dpo(config, tmp_path, progress=False)
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert len(rows) == 5 and path.name == "policy"
    assert torch.load(tmp_path / "checkpoint" / STATE, weights_only=False)["step"] == 4
    with pytest.raises(ValueError, match="label_smoothing applies to loss_type='sigmoid' only"):
        DPOConfig(loss_type="ipo", label_smoothing=0.1)


def _episodes(rewards, valid, terminated, truncated):
    from agents.core.rollout import EpisodeBatch

    as_t = lambda x, dtype=torch.float32: torch.tensor(x, dtype=dtype)
    T, N = len(rewards), len(rewards[0])
    return EpisodeBatch(torch.zeros(T, N, dtype=torch.long), torch.zeros(T, N), as_t(rewards), as_t(valid, torch.bool),
                        as_t(terminated, torch.bool), as_t(truncated, torch.bool), None, [None] * N, [{}] * N)


def test_ppo_advantages_on_the_token_layout_by_hand():
    # env 0: 3 tokens, EOS at t=2 with reward 2; env 1: cut at the cap after 2 tokens with reward 5 (no bootstrap)
    episodes = _episodes([[0, 0], [0, 5], [2, 0]], [[1, 1], [1, 1], [1, 0]], [[0, 0], [0, 0], [1, 0]], [[0, 0], [0, 1], [0, 0]])
    batch = {"old_values": torch.tensor([[1.0, 1.0, 1.0], [0.5, 0.5, 9.0]]),  # (N, T); 9.0 is past the end
             "mask": torch.tensor([[True, True, True], [True, True, False]])}
    out = PPOConfig(gamma=1.0, lam=1.0, whiten_advantages=False).advantages(episodes, batch, None)
    # γ=λ=1: A_t = (sum of rewards from t) − V_t; the return target is the sum of rewards from t
    torch.testing.assert_close(out["returns"], torch.tensor([[2.0, 2.0, 2.0], [5.0, 5.0, 0.0]]))
    torch.testing.assert_close(out["advantages"], torch.tensor([[1.0, 1.0, 1.0], [4.5, 4.5, 0.0]]))
    out = PPOConfig(gamma=1.0, lam=0.5, whiten_advantages=False).advantages(episodes, batch, None)
    # λ=0.5, env 0: δ = (0+1−1, 0+1−1, 2−1) = (0, 0, 1) → A = (0.25, 0.5, 1); env 1: δ = (0, 4.5) → A = (2.25, 4.5)
    torch.testing.assert_close(out["advantages"], torch.tensor([[0.25, 0.5, 1.0], [2.25, 4.5, 0.0]]))


def test_group_advantages_broadcast_to_every_token():
    episodes = _episodes([[1.0, 3.0, 0.0, 0.0], [0.0, 0.0, 2.0, 6.0]], [[1] * 4, [1] * 4], [[0] * 4, [1] * 4], [[0] * 4] * 2)
    batch = {"actions": torch.zeros(4, 2, dtype=torch.long)}
    out = PGConfig(estimator="rloo", group_size=2).advantages(episodes, batch, None)["advantages"]
    # returns (1, 3 | 2, 6): RLOO = own − the other's → (−2, 2 | −4, 4), the same on both tokens
    torch.testing.assert_close(out, torch.tensor([[-2.0, -2.0], [2.0, 2.0], [-4.0, -4.0], [4.0, 4.0]]))


def test_ptx_changes_the_update(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the pasta was great .\n")
    plain = train_ppo(_small_ppo(iterations=1, kl_target=None), tmp_path / "a", progress=False).policy
    mixed = train_ppo(_small_ppo(iterations=1, kl_target=None, ptx_coef=1.0, ptx_data=str(corpus)), tmp_path / "b",
                      progress=False).policy
    assert any(not torch.equal(p, q) for p, q in zip(plain.model.parameters(), mixed.model.parameters()))


def test_env_kwargs_cannot_override_the_agents_fields():
    with pytest.raises(ValueError, match=r"env_kwargs sets \['max_new_tokens'\]; set the config fields"):
        PPOConfig(env_kwargs={"max_new_tokens": 8})
    with pytest.raises(ValueError, match="must be in 'policy' mode"):
        PGConfig(env_kwargs={"kl_mode": "reference"})


def test_value_warmup_with_an_mlp_critic(tmp_path):
    config = PPOConfig(env_id="textenv/Bandit-v0", iterations=2, prompts_per_iter=8, kl_coef=0.0, value_warmup_iters=1)
    rows = train_ppo(config, tmp_path, progress=False).rows
    assert len(rows) == 2 and rows[0]["policy_loss"] == 0.0  # warm-up: no policy gradient


def test_a_refused_resume_leaves_the_run_untouched(tmp_path):
    train_ppo(_small_ppo(iterations=1), tmp_path, progress=False)
    saved = (tmp_path / "config.json").read_text()
    with pytest.raises(ValueError, match="different config"):
        train_ppo(_small_ppo(iterations=1, lr=0.5), tmp_path, progress=False)
    assert (tmp_path / "config.json").read_text() == saved


def test_bench_config_errors():
    from agents.cli.bench import BenchConfig

    with pytest.raises(ValueError, match=r"best_of_n=\(0, 4\)"):
        BenchConfig(best_of_n=(0, 4))
    with pytest.raises(ValueError, match="no repeats"):
        BenchConfig(seeds=(1, 1))
    with pytest.raises(ValueError, match="must be a multiple of group_size=4"):
        BenchConfig(completions_per_iter=10)


def test_mlp_policy_refuses_spaces_it_cannot_handle():
    from gymnasium import spaces

    from agents import MLPCategoricalPolicy

    box = spaces.Box(0.0, 1.0, (3,))
    with pytest.raises(TypeError, match=r"needs a Box observation space, got Dict; for the text envs use agents.LMPolicy"):
        MLPCategoricalPolicy(spaces.Dict({"input_ids": box}), spaces.Discrete(2))
    with pytest.raises(TypeError, match="needs a Discrete action space"):
        MLPCategoricalPolicy(box, box)


@pytest.mark.parametrize("clip", [2.5, 1.0, 0.0, float("nan")])
def test_ppo_clip_must_lie_in_zero_one(clip):
    """Regression: ``--clip 2.5`` trained (a ratio clipped to [-1.5, 3.5] never binds below)."""
    from agents import PPOConfig

    with pytest.raises(ValueError, match=f"clip={clip!r} is out of range"):
        PPOConfig(clip=clip)


def test_ppo_refuses_a_text_episode_truncated_before_its_cap():
    """A text env that truncates with ``capped=False`` (a time limit) would need a bootstrap PPO on text
    cannot compute: refused, where the old code silently treated it as the end of the return."""
    from agents import PPOConfig
    from agents.core.rollout import EpisodeBatch

    def episodes(capped):
        T, N = 2, 1
        return EpisodeBatch(torch.zeros(T, N, dtype=torch.long), torch.zeros(T, N), torch.tensor([[0.0], [1.0]]),
                            torch.ones(T, N, dtype=torch.bool), torch.zeros(T, N, dtype=torch.bool),
                            torch.tensor([[False], [True]]), None, [None], [{"capped": capped}])

    batch = {"old_values": torch.tensor([[0.5, 0.5]]), "mask": torch.ones(1, 2, dtype=torch.bool)}
    config = PPOConfig(gamma=1.0, lam=1.0, whiten_advantages=False)
    out = config.advantages(episodes(True), batch, None)  # -v0's cap: the return ends there, nothing bootstrapped
    torch.testing.assert_close(out["returns"], torch.tensor([[1.0, 1.0]]))
    with pytest.raises(NotImplementedError, match="truncated with info\\['capped'\\]=False"):
        config.advantages(episodes(False), batch, None)


def test_ppo_learns_the_same_with_the_kl_scored_at_the_end(tmp_path):
    """kl_timing="end" (one reference pass per finished completion, the KL summed into the last reward) and
    run_episodes' spreading of it back onto the tokens give PPO the update of kl_timing="step": the same
    samples and KL, and the same weight update up to what Adam makes of float rounding."""
    runs = {timing: train_ppo(_small_ppo(iterations=3, kl_target=None, kl_coef=0.2, lr=1e-3, kl_timing=timing),
                              tmp_path / timing, progress=False) for timing in ("step", "end")}
    step, end = runs["step"], runs["end"]
    for a, b in zip(step.rows, end.rows):
        assert b["kl"] == pytest.approx(a["kl"], rel=1e-4, abs=1e-5)
        assert b["gold"] == a["gold"]  # the same completions were sampled
    assert step.rows[-1]["kl"] > 0.01  # the policy moved away from the reference: the KL terms were not all 0
    start = LMPolicy.from_pretrained(step.policy.model.name_or_path, value_head=True)
    moved = {name: [] for name in ("step", "end", "diff")}
    for p0, a, b in zip(start.model.parameters(), step.policy.model.parameters(), end.policy.model.parameters()):
        moved["step"].append((a - p0).flatten())
        moved["end"].append((b - p0).flatten())
        moved["diff"].append((a - b).flatten())
    norm = {k: float(torch.cat(v).detach().norm()) for k, v in moved.items()}
    assert norm["step"] > 1e-2  # PPO did move the weights
    # Adam turns float-rounding differences of near-zero gradients into steps of up to lr, so the two updates are
    # compared as vectors: measured 0.0003 of the update's size
    assert norm["diff"] < 0.01 * norm["step"], norm
