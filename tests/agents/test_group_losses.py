"""The group-loss family (``loss_type``: bnpo, grpo, dapo, dr_grpo, gspo, cispo) and the KL in the loss: each by hand,
each against TRL's own ``GRPOTrainer._compute_loss`` on identical tensors, and their plumbing through PGConfig and the
on-policy loop (dynamic sampling, overlong shaping, a first minibatch whose ratio is exactly 1)."""

from __future__ import annotations

import math
import types
from collections import defaultdict

import numpy as np
import pytest
import torch

from agents.core.losses import aggregate, ppo_loss, sequence_log_ratio
from agents.core.rollout import concat_episodes
from agents.text.pg import PGConfig, train_pg

# two completions: 3 and 1 valid tokens of a width-3 batch
LOGP = torch.log(torch.tensor([[0.5, 0.25, 0.8], [0.9, 0.3, 0.3]]))
OLD = torch.log(torch.tensor([[0.4, 0.25, 0.5], [0.5, 0.3, 0.3]]))
REF = torch.log(torch.tensor([[0.25, 0.5, 0.8], [0.45, 0.3, 0.3]]))
MASK = torch.tensor([[True, True, True], [True, False, False]])
ADV = torch.tensor([1.0, -2.0])


def _loss(loss_type, logp=LOGP, **kw):
    return ppo_loss(logp, OLD, ADV[:, None].expand(2, 3), mask=MASK, loss_type=loss_type, **kw)


# ----------------------------------------------------------------------------------------------- by hand
def test_bnpo_grpo_and_dr_grpo_weigh_the_same_token_losses_differently():
    """Token losses −min(ρA, clip(ρ)A): row 0 ρ = 1.25→1.2, 1, 1.6→1.2 (A = 1); row 1 ρ = 1.8 (A = −2: −min(−3.6,
    −2.4) = 3.6). bnpo: mean of 4 tokens; grpo: mean of row means; dr_grpo: sum / (2 rows · 5 tokens)."""
    tokens = [-1.2, -1.0, -1.2, 3.6]
    assert _loss("bnpo").policy.item() == pytest.approx(sum(tokens) / 4)
    assert _loss("grpo").policy.item() == pytest.approx(((-1.2 - 1.0 - 1.2) / 3 + 3.6) / 2)
    assert _loss("dr_grpo", max_tokens=5).policy.item() == pytest.approx(sum(tokens) / 10)
    with pytest.raises(ValueError, match="max_tokens"):
        _loss("dr_grpo")


def test_dapo_clips_higher_above_than_below():
    """clip_high=0.28: row 0's ratios 1.25 and 1.6 clip at 1.28 (not 1.2); row 1's 1.8 with A < 0 is unclipped."""
    tokens = [-1.25, -1.0, -1.28, 3.6]
    terms = _loss("dapo", clip_high=0.28)
    assert terms.policy.item() == pytest.approx(sum(tokens) / 4, abs=1e-6)
    assert terms.clip_fraction.item() == pytest.approx(2 / 4)  # 1.6 and 1.8 lie outside [0.8, 1.28]


def test_gspo_uses_the_geometric_mean_ratio_of_each_sequence():
    """Row 0: s = (1.25·1·1.6)^(1/3) = 2^(1/3) ≈ 1.26 → clipped at 1 + 4e-4 for A = 1; row 1: s = 1.8 → −min(−3.6,
    −2(1 − 3e-4))... with A < 0 the min picks the unclipped −3.6·... : loss 3.6. Mean over the two sequences."""
    s0 = (1.25 * 1.0 * 1.6) ** (1 / 3)
    assert sequence_log_ratio(LOGP - OLD, MASK)[0, 0].exp().item() == pytest.approx(s0)
    terms = _loss("gspo", clip=3e-4, clip_high=4e-4)
    assert terms.policy.item() == pytest.approx((-(1 + 4e-4) * 1.0 + 3.6) / 2)
    assert terms.clip_fraction.item() == pytest.approx(1.0)  # both sequence ratios are out of [1 − 3e-4, 1 + 4e-4]


def test_cispo_weights_log_pi_by_the_capped_stop_gradient_ratio():
    """Loss −sg(min(ρ, 1 + ε_high))·A·log π, token mean; its gradient in log π_t is −w_t·A/4 (the weight is a
    constant): with ε_high = 0.5 row 0's ρ = 1.6 is capped at 1.5, row 1's 1.8 too."""
    logp = LOGP.clone().requires_grad_(True)
    terms = _loss("cispo", logp=logp, clip_high=0.5)
    w = torch.tensor([[1.25, 1.0, 1.5], [1.5, 0, 0]])
    a = torch.tensor([[1.0, 1, 1], [-2.0, 0, 0]])
    expected = (-(w * a * LOGP)[MASK]).sum() / 4
    assert terms.policy.item() == pytest.approx(expected.item())
    terms.loss.backward()
    assert torch.allclose(logp.grad, -(w * a) / 4 * MASK)


def test_aggregate_by_hand_and_its_errors():
    x, m = torch.tensor([[2.0, 4.0, 100.0], [6.0, 0.0, 0.0]]), torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert aggregate(x, m, "token").item() == pytest.approx(4.0)
    assert aggregate(x, m, "sequence").item() == pytest.approx(4.5)
    assert aggregate(x, m, "constant", max_tokens=3).item() == pytest.approx(2.0)
    with pytest.raises(ValueError, match="how='sum'"):
        aggregate(x, m, "sum")


def test_the_kl_in_the_loss_is_beta_times_the_estimator_per_token_and_clamped():
    """r = log π − log π_ref: row 0 (log 2, −log 2, 0), row 1 log 2. k3 = e^−r − 1 + r; k2 = r²/2; clamp at ±c."""
    r = torch.tensor([math.log(2), -math.log(2), 0.0, math.log(2)])
    k3 = (torch.exp(-r) - 1 + r)
    base = _loss("bnpo").loss.item()
    terms = _loss("bnpo", ref_logprobs=REF, kl_coef=0.1, kl_estimator="k3")
    assert terms.kl.item() == pytest.approx(k3.mean().item())
    assert terms.loss.item() == pytest.approx(base + 0.1 * k3.mean().item())
    terms = _loss("bnpo", ref_logprobs=REF, kl_coef=0.1, kl_estimator="k2", kl_clamp=0.1)
    assert terms.kl.item() == pytest.approx((r**2 / 2).clamp(max=0.1).mean().item())
    grpo = _loss("grpo", ref_logprobs=REF, kl_coef=0.1, kl_estimator="k3")  # same aggregation as the policy term
    assert grpo.loss.item() == pytest.approx(_loss("grpo").loss.item() + 0.1 * (k3[:3].mean() + k3[3]).item() / 2)
    with pytest.raises(ValueError, match="kl_estimator='full'"):
        _loss("bnpo", ref_logprobs=REF, kl_coef=0.1, kl_estimator="full")
    assert _loss("bnpo", kl_estimator="full").kl is None  # no KL in the loss: the reward's estimator is no concern
    with pytest.raises(ValueError, match="loss_type='ppo2'"):
        _loss("ppo2")


# ----------------------------------------------------------------------------------------------- against TRL
def _trl_loss(loss_type, logp, old, ref, mask, advantages, eps_low, eps_high, beta, level="token", max_len=None):
    """TRL's own ``GRPOTrainer._compute_loss`` on these tensors (its model pass stubbed to return ``logp``)."""
    trl_grpo = pytest.importorskip("trl.trainer.grpo_trainer")
    B, T = logp.shape
    accelerator = types.SimpleNamespace(num_processes=1, sync_gradients=True, gather=lambda x: x,
                                        gather_for_metrics=lambda x: x, reduce=lambda x, reduction="sum": x)
    fake = types.SimpleNamespace(
        top_entropy_quantile=1.0, off_policy_mask_threshold=None, importance_sampling_level=level, beta=beta,
        args=types.SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=1),
        loss_type=loss_type, epsilon_low=eps_low, epsilon_high=eps_high, use_vllm=False,
        vllm_importance_sampling_correction=False, model=types.SimpleNamespace(training=True),
        current_gradient_accumulation_steps=1, accelerator=accelerator, _entropy_bonus_enabled=False,
        aux_loss_enabled=False, _metrics=defaultdict(lambda: defaultdict(list)), max_completion_length=max_len or T,
        _get_per_token_logps_and_entropies=lambda *a, **k: (logp, torch.zeros_like(logp), None),
    )
    inputs = {"prompt_ids": torch.zeros(B, 1, dtype=torch.long), "prompt_mask": torch.ones(B, 1, dtype=torch.long),
              "completion_ids": torch.zeros(B, T, dtype=torch.long), "completion_mask": mask.long(),
              "advantages": advantages, "old_per_token_logps": old, "ref_per_token_logps": ref,
              "num_items_in_batch": mask.sum()}
    return trl_grpo.GRPOTrainer._compute_loss(fake, None, inputs)


TRL_CASES = [  # ours, TRL's loss_type, TRL's importance sampling level
    ("bnpo", "bnpo", "token"), ("grpo", "grpo", "token"), ("dapo", "dapo", "token"),
    ("dr_grpo", "dr_grpo", "token"), ("gspo", "grpo", "sequence"), ("cispo", "cispo", "token"),
]


@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("ours,theirs,level", TRL_CASES)
def test_each_loss_type_equals_trls_on_identical_tensors(ours, theirs, level, beta):
    """Random ratios of ±30% around old log-probs, random advantages and lengths: loss and gradient equal TRL's
    (TRL's KL in the loss is k3, unclamped; its cispo cap ε_max is our 1 + clip_high)."""
    g = torch.Generator().manual_seed(0)
    B, T = 6, 7
    old = -torch.rand(B, T, generator=g) * 3
    logp0 = old + (torch.rand(B, T, generator=g) - 0.5) * 0.6
    ref = old + (torch.rand(B, T, generator=g) - 0.5)
    lengths = torch.tensor([7, 1, 4, 6, 2, 5])
    mask = torch.arange(T)[None] < lengths[:, None]
    adv = torch.randn(B, generator=g)
    low, high = {"gspo": (0.05, 0.08), "cispo": (0.2, 0.1), "dapo": (0.2, 0.28)}.get(ours, (0.2, 0.2))
    cap = 1 + high if ours == "cispo" else high
    logp_trl = logp0.clone().requires_grad_(True)
    expected = _trl_loss(theirs, logp_trl, old, ref, mask, adv, low, cap, beta, level, max_len=9)
    expected.backward()
    logp = logp0.clone().requires_grad_(True)
    terms = ppo_loss(logp, old, adv[:, None].expand(B, T), mask=mask, clip=low, clip_high=high, loss_type=ours,
                     max_tokens=9, ref_logprobs=ref, kl_coef=beta, kl_estimator="k3", kl_clamp=None)
    terms.loss.backward()
    assert terms.loss.item() == pytest.approx(expected.item(), rel=1e-6, abs=1e-7)
    assert torch.allclose(logp.grad, logp_trl.grad, rtol=1e-5, atol=1e-7)
    assert terms.clip_fraction.item() > 0 or ours == "cispo"  # the case exercises the clip


def test_the_overlong_penalty_equals_trls_soft_overlong_punishment():
    other_rewards = pytest.importorskip("trl.rewards.other_rewards")
    config = PGConfig(estimator="grpo", loss_type="dapo", max_new_tokens=20, overlong_buffer=8, group_size=2)
    lengths = torch.tensor([3, 12, 13, 17, 20, 20])
    episodes = types.SimpleNamespace(returns=torch.zeros(6), lengths=lengths)
    theirs = other_rewards.get_soft_overlong_punishment(20, 8)([[0] * n for n in lengths.tolist()])
    assert config.shaped_returns(episodes).tolist() == pytest.approx(theirs)
    assert theirs[1] == 0 and theirs[2] == pytest.approx(-1 / 8) and theirs[-1] == -1  # not all zero


# ----------------------------------------------------------------------------------------------- config and loop
def test_loss_type_presets_and_overrides():
    assert PGConfig(estimator="grpo", loss_type="dr_grpo").baseline_and_scale == ("mean", "none")
    assert PGConfig(estimator="grpo", loss_type="dr_grpo", scale="std").baseline_and_scale == ("mean", "std")
    assert PGConfig(loss_type="gspo").clip_range == (3e-4, 4e-4)
    assert PGConfig(loss_type="dapo").clip_range == (0.2, 0.28)
    assert PGConfig(loss_type="dapo", clip=0.1, clip_high=0.3).clip_range == (0.1, 0.3)
    assert PGConfig().clip_range == (0.2, 0.2) and PGConfig().loss_type == "bnpo"
    dapo = PGConfig(loss_type="dapo")
    assert dapo.dynamic_sampling_on and dapo.overlong_mode == "penalty"
    assert not PGConfig(loss_type="dapo", dynamic_sampling=False, overlong="none").dynamic_sampling_on
    settings = PGConfig(loss_type="cispo", max_new_tokens=12).update_settings()
    assert (settings.loss_type, settings.clip_high, settings.max_tokens, settings.kl_coef) == ("cispo", 4.0, 12, 0.0)


@pytest.mark.parametrize("kwargs,match", [
    (dict(loss_type="ppo"), "loss_type='ppo'"),
    (dict(clip_high=-0.1), "clip_high"),
    (dict(overlong="cut"), "overlong='cut'"),
    (dict(overlong_buffer=100), "overlong_buffer"),
    (dict(max_rollouts=0), "max_rollouts"),
    (dict(kl_in_loss=True), "k1 in the loss has zero expected gradient"),
    (dict(kl_in_loss=True, kl_estimator="full"), "kl_estimator='full'"),
    (dict(kl_in_loss=True, kl_estimator="k3", kl_target=5.0), "kl_target"),
    (dict(kl_clamp=0.0), "kl_clamp"),
    (dict(env_id="textenv/Bandit-v0", loss_type="dapo", overlong="none"), "dynamic_sampling needs a text env"),
])
def test_bad_group_loss_settings_are_refused_naming_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PGConfig(**kwargs)


def _episodes(returns, K):
    """A fake EpisodeBatch of one-step episodes with these returns (for the group filter)."""
    n = len(returns)
    t = lambda x, d=torch.float32: torch.tensor([x], dtype=d)  # noqa: E731
    from agents.core.rollout import EpisodeBatch

    return EpisodeBatch(t(list(range(n)), torch.long), t([-1.0] * n), t(returns), t([True] * n, torch.bool),
                        t([True] * n, torch.bool), t([False] * n, torch.bool), {"ids": np.arange(n)[:, None]},
                        [None] * n, [{"i": i} for i in range(n)])


def test_dynamic_sampling_keeps_the_groups_with_signal_and_concatenates_them_in_order():
    config = PGConfig(loss_type="dapo", group_size=2, overlong="none")
    batch = _episodes([1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 2.0, 1.0], 2)
    assert config.informative_groups(batch).tolist() == [1, 3]
    other = _episodes([5.0, 4.0, 3.0, 3.0], 2)
    merged = concat_episodes([(batch, torch.tensor([2, 3, 6, 7])), (other, torch.tensor([0, 1]))])
    assert merged.returns.tolist() == [0.0, 1.0, 2.0, 1.0, 5.0, 4.0]
    assert [info["i"] for info in merged.infos] == [2, 3, 6, 7, 0, 1]
    assert merged.first_obs["ids"][:, 0].tolist() == [2, 3, 6, 7, 0, 1]


@pytest.fixture(scope="module")
def dapo_run(tmp_path_factory):
    config = PGConfig(estimator="grpo", loss_type="dapo", iterations=2, prompts_per_iter=4, group_size=4,
                      max_new_tokens=8, epochs=2, minibatch_rows=8, seed=3, checkpoint_every=1)
    return config, train_pg(config, tmp_path_factory.mktemp("dapo"), progress=False)


def test_a_dapo_run_reports_its_sampling_and_a_first_minibatch_ratio_of_exactly_one(dapo_run):
    """The old log-probs are scored in the update's own first-epoch minibatches (score_old), so the first
    minibatch's ratio is exactly 1: not 1 up to the rounding of a pass of another shape. The sampler's log-probs
    (the KV-cached decode) agree with the teacher-forced ones to float rounding."""
    _, result = dapo_run
    for row in result.rows:
        assert row["first_log_ratio_max"] == 0.0
        assert 0 <= row["sampler_gap_max"] < 1e-4 and row["sampler_gap_mean"] <= row["sampler_gap_max"]
        assert 1 <= row["rollouts"] <= 3 and 0 < row["groups_kept"] <= 4 and row["epochs"] == 2
        assert 0 < row["clip_fraction"] < 1


def test_a_killed_dapo_run_resumes_to_the_same_numbers(dapo_run, tmp_path):
    config, full = dapo_run
    import dataclasses

    train_pg(dataclasses.replace(config, iterations=1), tmp_path, progress=False)
    resumed = train_pg(config, tmp_path, progress=False)
    assert resumed.rows[-1]["proxy"] == full.rows[-1]["proxy"]
    assert resumed.rows[-1]["policy_loss"] == full.rows[-1]["policy_loss"]


def test_with_the_kl_in_the_loss_the_env_has_no_reference_and_the_update_reports_the_kl(tmp_path):
    from agents.core.onpolicy import loss_reference, make_env

    config = PGConfig(estimator="grpo", loss_type="grpo", kl_in_loss=True, kl_estimator="k3", kl_coef=0.1,
                      iterations=2, prompts_per_iter=2, group_size=4, max_new_tokens=6, epochs=2, minibatch_rows=4)
    env = make_env(config)
    assert not hasattr(env, "kl_coef") and "KL" not in type(env).__name__  # no shaping wrapper, no reference loaded
    rows = train_pg(config, tmp_path, progress=False).rows
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-5)  # the first rollout is the reference's own
    assert rows[1]["kl"] > 1e-4  # summed k3 (≥ 0) of a policy that moved
    assert rows[0]["kl_loss_term"] > 0 and rows[1]["kl_loss_term"] > 0  # 0 on the first minibatch only
    assert loss_reference(PGConfig(), env, None) is None  # without kl_in_loss: no reference


def test_the_clip_acts_only_from_the_second_minibatch_on():
    """epochs=1, one minibatch: the ratio is 1, so dapo's and grpo's clips cannot change anything."""
    import dataclasses

    from agents.core.update import UpdateSettings

    s = UpdateSettings(epochs=1, minibatch_rows=0)
    assert not s.needs_old(8) and dataclasses.replace(s, epochs=2).needs_old(8)
    assert dataclasses.replace(s, minibatch_rows=4).needs_old(8) and not dataclasses.replace(s, minibatch_rows=8).needs_old(8)


def test_with_lora_the_kl_in_the_loss_uses_the_base_with_the_adapter_off(tmp_path):
    """No second copy: the reference is the policy's own base (AdapterOff), and after training its log-probs are
    still exactly the starting model's."""
    from agents.core.onpolicy import loss_reference, token_logprobs, training_batch
    from agents.core.rollout import run_episodes
    from agents.policies.lm import AdapterOff
    from textenv import world
    from textenv.lm import load_causal_lm

    config = PGConfig(estimator="grpo", loss_type="grpo", kl_in_loss=True, kl_estimator="k2", kl_coef=0.1, lora_r=4,
                      iterations=2, prompts_per_iter=2, group_size=4, max_new_tokens=6, epochs=2, minibatch_rows=4,
                      lr=1e-2)
    result = train_pg(config, tmp_path, progress=False)
    from agents.core.onpolicy import make_env

    env = make_env(config)
    reference = loss_reference(config, env, result.policy)
    assert isinstance(reference, AdapterOff)
    result.policy.generator = torch.Generator().manual_seed(0)
    episodes = run_episodes(env, result.policy, seed=0, options={"prompts": env.unwrapped.task.prompts[:8]})
    batch = training_batch(episodes, True)
    base = token_logprobs(load_causal_lm(world.lm_path()), batch)
    assert torch.equal(token_logprobs(reference, batch), base)
    with torch.no_grad():
        trained = result.policy.evaluate(batch, with_values=False).logprob
    assert (trained - base)[batch["mask"]].abs().max() > 1e-3  # the adapter did move the policy


def test_the_reward_kls_full_estimator_does_not_reach_the_loss(tmp_path):
    """The env's ``kl_estimator="full"`` (KL in the reward) is no estimator of the KL in the loss; the update must not
    be handed it (it was, and refused every minibatch)."""
    config = PGConfig(estimator="grpo", kl_estimator="full", iterations=1, prompts_per_iter=2, group_size=2,
                      max_new_tokens=4, epochs=2)
    assert config.update_settings().kl_coef == 0.0
    assert train_pg(config, tmp_path, progress=False).rows[-1]["epochs"] == 2
