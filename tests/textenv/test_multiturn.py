"""Multi-turn token-level episodes (textenv.multiturn, textenv.guess): the env's inserted tokens, its limits and bad
input, batched = N single envs, the sampler's prefill of the env's tokens, and the agents' exclusion of them from the
policy loss, the value targets and the KL. A character-level tokenizer with no pad token and a random tiny GPT-2
stand in for the built-in guessing LM, so these run without it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from textenv.guess import GuessNumber, make_guess_number, make_guess_number_vector
from textenv.lm import IncrementalLM
from textenv.multiturn import MultiTurnEnv, MultiTurnVectorEnv, Turn

CHARS = list("0123456789abcdefghijklmnopqrstuvwxyz -\n")


@pytest.fixture(scope="module")
def char_lm(tmp_path_factory):
    """A character-level tokenizer (EOS, no pad token) and a random 2-layer GPT-2 over it, saved by path."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    vocab = {"<eos>": 0, "<unk>": 1, **{c: i + 2 for i, c in enumerate(CHARS)}}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Split(Regex("[\\s\\S]"), "isolated")
    raw.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<eos>", unk_token="<unk>")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(vocab) + 3, n_positions=160, n_embd=32, n_layer=2, n_head=2,
                                       bos_token_id=0, eos_token_id=0))  # 3 embeddings past the tokenizer, as real LMs
    path = tmp_path_factory.mktemp("char_lm")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path), tokenizer


def ids(tokenizer, text):
    return tokenizer.encode(text, add_special_tokens=False)


def play(env, tokenizer, text):
    """Step ``env`` with the characters of ``text``; returns the list of step results."""
    return [env.step(t) for t in ids(tokenizer, text)]


# ------------------------------------------------------------------------------------------------ the game
def test_guess_number_answers_by_hand():
    game = GuessNumber(1, 16)
    prompt, state = game.start(np.random.default_rng(0), instance="10")
    assert prompt == "guess 1-16\n" and state == {"secret": 10, "turns": 0}
    assert game.respond(state, "8\n").reply == "higher\n"
    assert game.respond(state, " 12 \n").reply == "lower\n"
    for bad in ("ab\n", "\n", "", "17\n", "0\n", "1 2\n"):  # not a number in the range: a turn, never a crash
        answer = game.respond(state, bad)
        assert answer.reply == "invalid\n" and not answer.done and answer.info["invalid"]
    answer = game.respond(state, "10\n")
    assert answer.done and answer.reward == pytest.approx(1.0 - 0.1 * 8) and answer.info["turns_to_solve"] == 9
    with pytest.raises(ValueError, match="low=5, high=2"):
        GuessNumber(5, 2)


# ------------------------------------------------------------------------------------------------ the env
def test_an_episode_inserts_the_replies_as_tokens_and_marks_them(char_lm):
    path, tok = char_lm
    env = make_guess_number(model=path)
    obs, info = env.reset(seed=0, options={"prompt": "10"})
    prompt_len = len(ids(tok, "guess 1-16\n"))
    assert obs["attention_mask"].sum() == prompt_len and info["prompt"] == "guess 1-16\n"
    steps = play(env, tok, "8\n")
    assert steps[0][1:4] == (0.0, False, False) and "env_tokens" not in steps[0][4]
    obs, reward, terminated, truncated, info = steps[1]
    assert info["env_tokens"] == ids(tok, "higher\n") and reward == 0.0 and not (terminated or truncated)
    n = int(obs["attention_mask"].sum())
    assert tok.decode(obs["input_ids"][prompt_len:n]) == "8\nhigher\n"
    assert obs["env_mask"][:n].tolist() == [0] * (prompt_len + 2) + [1] * 7
    play(env, tok, "12\n")
    obs, reward, terminated, truncated, info = play(env, tok, "10\n")[-1]
    assert terminated and not truncated and reward == pytest.approx(0.8)
    assert info["transcript"] == "8\nhigher\n12\nlower\n10\n" and info["turns"] == 3 and info["num_tokens"] == 8
    assert info["solved"] and not info["capped"] and "env_tokens" not in info
    with pytest.raises(RuntimeError, match="reset"):
        env.step(3)


def test_the_turn_limit_and_the_token_cap_truncate_as_capped(char_lm):
    path, tok = char_lm
    env = make_guess_number(model=path, max_turns=2)
    env.reset(seed=0, options={"prompt": "10"})
    *_, (_, _, terminated, truncated, info) = play(env, tok, "1\n2\n")
    assert truncated and not terminated and info["capped"] and info["limit"] == "turns" and not info["solved"]
    env = make_guess_number(model=path, max_new_tokens=12)
    env.reset(seed=0, options={"prompt": "10"})
    results = play(env, tok, "1\n2\n")  # "1\n" + "higher\n" = 9 tokens; no room for "2\n" + a reply
    assert results[-1][3] and results[-1][4]["limit"] == "tokens" and results[-1][4]["capped"]
    env = make_guess_number(model=path, max_turn_tokens=2)  # a turn of 2 tokens without a newline ends anyway
    env.reset(seed=0, options={"prompt": "10"})
    assert play(env, tok, "77")[-1][4]["env_tokens"] == ids(tok, "invalid\n")


def test_bad_actions_and_bad_settings_are_refused_without_changing_the_env(char_lm):
    path, tok = char_lm
    env = make_guess_number(model=path)
    obs, _ = env.reset(seed=0)
    for bad in (10_000, -1, 2.0, True, "3"):
        with pytest.raises(ValueError, match="action"):
            env.step(bad)
    assert np.array_equal(env._obs()["input_ids"], obs["input_ids"])
    with pytest.raises(ValueError, match="turn_end"):
        MultiTurnEnv(GuessNumber(), path, turn_end="ab")
    with pytest.raises(ValueError, match="max_turns=0"):
        make_guess_number(model=path, max_turns=0)
    with pytest.raises(ValueError, match="kl_in_loss"):
        make_guess_number(model=path, kl_coef=0.1)
    with pytest.raises(ValueError, match="not an instance"):
        env.reset(options={"prompt": "99"})
    with pytest.raises(TypeError, match="start"):
        MultiTurnEnv(object(), path)

    class Broken:
        def start(self, rng, instance=None):
            return "guess\n", {}

        def respond(self, state, turn):
            return "higher"

    env = MultiTurnEnv(Broken(), path)
    env.reset(seed=0)
    with pytest.raises(TypeError, match="Turn"):
        play(env, tok, "1\n")


def test_check_env_and_seeded_determinism(char_lm):
    path, tok = char_lm
    check_env(make_guess_number(model=path), skip_render_check=True)

    def run(seed):
        env = make_guess_number(model=path)
        env.reset(seed=seed)
        out = []
        for t in ids(tok, "8\n4\n12\n2\n14\n6\n10\n16\n"):
            out.append(env.step(t)[1:])
            if out[-1][1] or out[-1][2]:
                break
        return out

    assert repr(run(3)) == repr(run(3))
    assert len({repr(run(s)) for s in range(6)}) > 1  # the seed picks the secret


def test_the_batched_env_equals_n_single_envs(char_lm):
    path, tok = char_lm
    N = 4
    vec = make_guess_number_vector(N, model=path, max_turns=3)
    singles = [make_guess_number(model=path, max_turns=3) for _ in range(N)]
    vec_obs, _ = vec.reset(seed=5)
    for i, env in enumerate(singles):
        obs, _ = env.reset(seed=5 + i)
        assert np.array_equal(obs["input_ids"], vec_obs["input_ids"][i])
    rng = np.random.default_rng(0)
    alphabet = ids(tok, "0123456789\n")
    for _ in range(40):
        actions = rng.choice(alphabet, size=N)
        obs, rewards, terminated, truncated, infos = vec.step(actions)
        for i, env in enumerate(singles):
            o, r, te, tr, info = env.step(int(actions[i]))
            assert (r, te, tr) == (rewards[i], terminated[i], truncated[i])
            if te or tr:
                assert infos["final_info"]["transcript"][i] == info["transcript"]
                assert np.array_equal(infos["final_obs"][i]["env_mask"], o["env_mask"])
                o, _ = env.reset()
            assert np.array_equal(o["input_ids"], obs["input_ids"][i]) and np.array_equal(o["env_mask"], obs["env_mask"][i])
            assert vec.env_tokens[i] == ([] if te or tr else list(info.get("env_tokens", [])))


# ------------------------------------------------------------------------------------------------ the sampler
def test_extend_equals_a_full_forward_of_the_whole_context(char_lm):
    """The KV cache extended by ragged lists (the agent's token, then the env's reply) gives the log-probs of one
    teacher-forced forward over each row's whole sequence."""
    from transformers import AutoModelForCausalLM

    path, tok = char_lm
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    rows = [ids(tok, "guess 1-16\n"), ids(tok, "go\n")]
    lm = IncrementalLM(model, 2, 0)
    lm.reset_rows([0, 1], rows)
    for chunk in ([ids(tok, "8\nhigher\n"), ids(tok, "x")], [ids(tok, "1"), ids(tok, "yz\nlower\n")]):
        got = lm.extend(chunk)
        rows = [r + c for r, c in zip(rows, chunk)]
        for i, row in enumerate(rows):
            with torch.no_grad():
                full = torch.log_softmax(model(torch.tensor([row])).logits[0, -1], -1)
            assert torch.allclose(got[i], full, atol=1e-5)
    with pytest.raises(ValueError, match="non-empty"):
        lm.extend([[1], []])


@pytest.fixture(scope="module")
def rollout(char_lm):
    """One batched rollout of an LM policy on the multi-turn env, and its training batch."""
    from agents.core.onpolicy import training_batch
    from agents.core.rollout import run_episodes
    from agents.policies.lm import LMPolicy

    path, _ = char_lm
    env = make_guess_number_vector(6, model=path, autoreset_mode="disabled", max_turns=3, max_turn_tokens=3)
    torch.manual_seed(0)
    policy = LMPolicy.from_pretrained(path, value_head=True)
    policy.generator = torch.Generator().manual_seed(1)
    episodes = run_episodes(env, policy, seed=0, options={"prompts": ["3", "3", "3", "9", "9", "9"]})
    return policy, env, episodes, training_batch(episodes, True)


def test_the_sampler_feeds_the_env_tokens_so_its_log_probs_are_the_teacher_forced_ones(rollout):
    """Had the sampler not prefilled the replies, its log-probs after the first turn would condition on a context
    without them and differ from the teacher-forced pass over the final observation."""
    policy, env, episodes, batch = rollout
    assert any(info.get("turns", 0) > 1 for info in episodes.infos)  # replies were inserted
    assert (batch["positions"] != torch.arange(batch["actions"].shape[1])).any()
    with torch.no_grad():
        out = policy.evaluate(batch)
    valid = batch["mask"]
    assert (out.logprob - batch["sample_logprobs"])[valid].abs().max() < 1e-4


def test_the_env_tokens_are_out_of_the_policy_loss(rollout):
    """The update scores the agent's tokens only: evaluate's log-probs are the full forward's at the agent tokens,
    the mask counts the agent tokens only, and the log-probs of the env's tokens get no gradient."""
    policy, env, episodes, batch = rollout
    ids_, prompt_len = batch["input_ids"], batch["prompt_len"]
    shapes = []
    handle = policy.model.lm_head.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape)) and None)
    out = policy.evaluate(batch)
    handle.remove()
    assert int(batch["mask"].sum()) == int(episodes.lengths.sum())  # agent tokens, not the env's
    with torch.no_grad():
        full = torch.log_softmax(policy.model(input_ids=ids_, attention_mask=batch["attention_mask"]).logits, -1)
    for i in range(len(ids_)):
        n = int(batch["mask"][i].sum())
        at = prompt_len[i] + batch["positions"][i, :n]
        expected = full[i, at - 1].gather(-1, ids_[i, at][:, None]).squeeze(1)
        assert torch.allclose(out.logprob[i, :n], expected, atol=1e-5)
        assert torch.equal(ids_[i, at], batch["actions"][i, :n])
    # the LM head ran on the agents' positions only: no logit of an env token was computed at all
    assert shapes[-1][1] == batch["actions"].shape[1]


def test_the_value_targets_cover_the_agent_steps_only(rollout):
    """PPO's GAE runs over the agent's steps: with γ = λ = 1 the return of an agent token is the reward still to
    come in its episode, and there is one per agent token (the env's tokens have no value and no target)."""
    from agents import PPOConfig

    policy, env, episodes, batch = rollout
    with torch.no_grad():
        old = policy.evaluate(batch)
    batch = {**batch, "old_values": old.value}
    config = PPOConfig(gamma=1.0, lam=1.0, whiten_advantages=False)
    out = config.advantages(episodes, batch, policy)
    rewards = episodes.rewards.T  # (N, T) per agent step
    to_go = rewards.flip(1).cumsum(1).flip(1)
    valid = batch["mask"]
    assert torch.allclose(out["returns"][valid], to_go[valid], atol=1e-6)
    assert out["returns"].shape == batch["actions"].shape


def test_the_kl_in_the_loss_scores_the_agent_tokens_only(rollout, char_lm):
    """The reference's log-probs come from the same positions (agent tokens), so the KL counts no env token."""
    from agents.core.onpolicy import token_logprobs
    from agents.core.losses import ppo_loss
    from transformers import AutoModelForCausalLM

    policy, env, episodes, batch = rollout
    reference = AutoModelForCausalLM.from_pretrained(char_lm[0]).eval()
    with torch.no_grad():
        reference.transformer.wte.weight.mul_(1.5)  # a different reference
    ref = token_logprobs(reference, batch)
    with torch.no_grad():
        full = torch.log_softmax(reference(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, -1)
    i = int(torch.argmax(batch["positions"].max(1).values))  # the row with most env tokens
    n = int(batch["mask"][i].sum())
    at = batch["prompt_len"][i] + batch["positions"][i, :n]
    assert torch.allclose(ref[i, :n], full[i, at - 1].gather(-1, batch["input_ids"][i, at][:, None]).squeeze(1), atol=1e-5)
    with torch.no_grad():
        out = policy.evaluate(batch)
    terms = ppo_loss(out.logprob, out.logprob, torch.zeros_like(out.logprob), mask=batch["mask"],
                     ref_logprobs=ref, kl_coef=1.0, kl_estimator="k2", kl_clamp=None)
    expected = ((out.logprob - ref) ** 2 / 2)[batch["mask"]].mean()
    assert terms.kl.item() == pytest.approx(expected.item(), rel=1e-5)


def test_a_turn_is_a_turn_object():
    assert Turn().reply == "" and not Turn().done and Turn(reward=1.0).reward == 1.0


# ------------------------------------------------------------------------------------------------ TurnEnv
def test_turn_env_plays_whole_turns_and_returns_the_reply(char_lm):
    from textenv.turn import TurnEnv

    path, tok = char_lm
    env = TurnEnv(make_guess_number(model=path))
    obs, info = env.reset(seed=0, options={"prompt": "10"})
    obs, reward, terminated, truncated, info = env.step("8")  # the newline is appended
    assert info["reply"] == "higher\n" and info["turn_ids"] == ids(tok, "8\n") and not terminated
    obs, reward, terminated, truncated, info = env.step("")  # an empty turn: the game answers "invalid"
    assert info["reply"] == "invalid\n" and reward == 0.0
    obs, reward, terminated, truncated, info = env.step(ids(tok, "10\n"))
    assert terminated and reward == pytest.approx(0.8) and info["reply"] == "" and info["transcript"].endswith("10\n")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="turn of 6 tokens"):
        env.step("12345")
    with pytest.raises(ValueError, match="outside Discrete"):
        env.step([500])
    with pytest.raises(TypeError, match="a turn is a str"):
        env.step(3.5)


def test_turn_env_keeps_the_ids_it_is_given_where_decode_then_encode_would_change_them():
    """Token in, token out: BPE ids that are not the canonical tokenization of their text (the world tokenizer
    merges ``"t" + "he"`` into one token) are recorded as given; text is encoded once, as given."""
    from textenv import world
    from textenv.env import TextGenerationEnv
    from textenv.turn import TurnEnv

    lm = str(world.lm_path())
    base = TextGenerationEnv(model=lm, reward_model=lambda p, c: [0.0] * len(p), prompts=["the movie was"],
                             max_new_tokens=6)
    tok = base.task.tokenizer
    split = [tok.convert_tokens_to_ids(t) for t in tok.tokenize(" the")]
    pieces = [i for t in (" t", "he") for i in tok.encode(t, add_special_tokens=False)]
    assert tok.decode(pieces) == tok.decode(split) and pieces != split  # a non-canonical tokenization of " the"
    env = TurnEnv(base)
    obs, _ = env.reset(seed=0)
    n = int(obs["attention_mask"].sum())
    obs, _, terminated, _, info = env.step(pieces)  # one turn = the whole completion: EOS appended, episode ends
    assert terminated and info["turn_ids"] == pieces + [tok.eos_token_id]
    assert obs["input_ids"][n : n + len(pieces)].tolist() == pieces  # the ids given, not re-encoded
    env.reset(seed=0)
    obs, *_ = env.step(" the")
    assert obs["input_ids"][n : n + len(split)].tolist() == tok.encode(" the", add_special_tokens=False)
