"""Language-conditioned control in miniature: BabyAI levels with their instructions, a held-out split and paraphrases.

Each id wraps a `BabyAI <https://minigrid.farama.org/environments/babyai/>`_ level (``pip install "textenv[babyai]"``,
which brings ``minigrid``): a 7×7 egocentric grid view, the agent's direction, and the mission as text; 7 discrete
actions (left, right, forward, pickup, drop, toggle, done); reward ``1 − 0.9·steps/max_steps`` on success, else 0.

| id | level | missions (e.g.) | max steps |
|---|---|---|---|
| ``robotics/BabyAI-GoToLocal-v0`` | ``BabyAI-GoToLocal-v0`` | "go to the red ball" | 64 |
| ``robotics/BabyAI-PickupLoc-v0`` | ``BabyAI-PickupLoc-v0`` | "pick up the blue key in front of you" | 64 |
| ``robotics/BabyAI-PutNextLocal-v0`` | ``BabyAI-PutNextLocal-v0`` | "put the grey box next to the green key" | 128 |

``split`` chooses the missions an episode may have (the level is re-drawn, deterministically from the seed, until
its mission belongs to the split):

* ``"train"``: missions that name none of the :data:`HELDOUT_PAIRS` (colour × object combinations).
* ``"heldout"``: missions that name at least one of them — combinations a policy trained on ``"train"`` never read
  in an instruction (it has read each colour and each object, only never together). The split is on the words:
  held-out objects still stand in train scenes as distractors and, for a mission that names no colour ("pick up a
  ball"), may be the object picked up.
* ``"paraphrase"``: ``"train"`` missions with their verbs and relations rewritten by :data:`PARAPHRASES` (e.g.
  "go to the red ball" → "walk over to the red ball"); the scene and the task are the train split's for the same
  seed. Object and colour words are never rewritten: a word-level encoder reads an unknown word as ``<unk>``, so a
  rewritten noun ("sphere") would leave the target ambiguous in the tokens, not test the language.
* ``"all"``: the level as BabyAI draws it (the default is ``"train"``: what an agent is trained on).

``observation="text"`` (the default) gives ``Dict(image, direction, mission)`` with the mission as a string;
``observation="tokens"`` gives one flat ``Box`` (:func:`encode_observation`: the 147 grid codes, the direction and
:data:`MAX_WORDS` word ids of :data:`VOCAB`) that the agents' policies read (:mod:`agents.policies.language`), so
the same PPO, BC and dataset code as MuJoCo runs on it. ``info["success"]`` says whether the mission was done.
Episodes end as BabyAI's do: ``terminated`` when the level's verifier declares success or failure,
``truncated`` after the level's own step limit (64 or 128), which is why the registered ids set no
``max_episode_steps``.
"""

from __future__ import annotations

import contextlib
import io
import re
import string
import time

import gymnasium as gym
import numpy as np
from gymnasium import spaces

LEVELS = {"GoToLocal": "BabyAI-GoToLocal-v0", "PickupLoc": "BabyAI-PickupLoc-v0",
          "PutNextLocal": "BabyAI-PutNextLocal-v0"}
LANGUAGE_IDS = {f"robotics/BabyAI-{name}-v0": name for name in LEVELS}
SPLITS = ("train", "heldout", "paraphrase", "all")
OBSERVATIONS = ("text", "tokens")

COLORS = ("red", "green", "blue", "purple", "yellow", "grey")
OBJECTS = ("ball", "box", "key")
HELDOUT_PAIRS = (("red", "ball"), ("green", "key"), ("blue", "box"), ("yellow", "key"))
"""Colour × object combinations that ``"train"`` missions never name (4 of the 18; every colour but purple and
grey and every object still occurs in training, only never in these combinations)."""

PARAPHRASES = (("go to", ("walk over to", "head to", "move to")), ("pick up", ("grab", "take", "lift")),
               ("put", ("place", "move")), ("next to", ("beside", "near")), ("in front of you", ("ahead of you",)),
               ("behind you", ("at your back",)))
"""The paraphrase rules: each phrase of a mission found here is replaced by one of its alternatives, drawn from
the episode's seed. Most alternatives hold words the instruction vocabulary does not have (they read as ``<unk>``);
object and colour words are never rewritten (see the module docstring)."""

VOCAB = ("<pad>", "<unk>", "a", "ball", "behind", "blue", "box", "front", "go", "green", "grey", "in", "key", "left",
         "next", "of", "on", "pick", "purple", "put", "red", "right", "the", "to", "up", "yellow", "you", "your")
"""The instruction vocabulary: every word of the three levels' missions; id 0 pads, id 1 is any other word."""
MAX_WORDS = 16
"""Word slots in a token observation (the longest mission of the three levels has 9 words)."""
GRID_CELLS, GRID_CODES = 49, 3  # 7×7 cells of (object, colour, state) codes
GRID_HIGH = (10, 5, 2)  # minigrid's largest object, colour and state indices
TOKEN_OBS_DIM = GRID_CELLS * GRID_CODES + 1 + MAX_WORDS

_PAIR = re.compile(rf"\b({'|'.join(COLORS)}) ({'|'.join(OBJECTS)})\b")
_WORD_ID = {w: k for k, w in enumerate(VOCAB)}
_PARAPHRASES_LONGEST_FIRST = sorted(PARAPHRASES, key=lambda rule: -len(rule[0].split()))
_CHARSET = string.ascii_lowercase + " ,"


def mission_pairs(mission: str) -> list[tuple[str, str]]:
    """The colour × object combinations a mission names.

    >>> mission_pairs("put the red ball next to the grey key")
    [('red', 'ball'), ('grey', 'key')]
    """
    return _PAIR.findall(mission)


def mission_split(mission: str) -> str:
    """``"heldout"`` if the mission names one of :data:`HELDOUT_PAIRS`, else ``"train"``.

    >>> mission_split("go to the red ball"), mission_split("go to a red box"), mission_split("pick up a ball")
    ('heldout', 'train', 'train')
    """
    return "heldout" if any(pair in HELDOUT_PAIRS for pair in mission_pairs(mission)) else "train"


def paraphrase(mission: str, rng: np.random.Generator) -> str:
    """``mission`` with every phrase of :data:`PARAPHRASES` replaced by one of its alternatives (drawn by ``rng``),
    longest phrases first and each word rewritten at most once."""
    out, k = [], 0
    words = mission.split()
    while k < len(words):
        for phrase, alternatives in _PARAPHRASES_LONGEST_FIRST:
            n = len(phrase.split())
            if " ".join(words[k:k + n]) == phrase:
                out.append(alternatives[int(rng.integers(len(alternatives)))])
                k += n
                break
        else:
            out.append(words[k])
            k += 1
    return " ".join(out)


def encode_mission(mission: str) -> np.ndarray:
    """(MAX_WORDS,) word ids of :data:`VOCAB` (``<unk>`` for other words), padded with 0.

    >>> encode_mission("walk to the red ball")[:6].tolist()
    [1, 23, 22, 20, 3, 0]
    """
    words = mission.split()
    if len(words) > MAX_WORDS:
        raise ValueError(f"mission {mission!r} has {len(words)} words; token observations hold at most {MAX_WORDS}")
    ids = np.zeros(MAX_WORDS, dtype=np.int64)
    ids[:len(words)] = [_WORD_ID.get(w, 1) for w in words]
    return ids


def encode_observation(image: np.ndarray, direction: int, mission: str) -> np.ndarray:
    """The flat token observation: the (7, 7, 3) grid codes row-major, the direction, the mission's word ids."""
    return np.concatenate([np.asarray(image, dtype=np.float32).reshape(-1), [float(direction)],
                           encode_mission(mission).astype(np.float32)]).astype(np.float32)


def token_observation_space() -> spaces.Box:
    high = np.concatenate([np.tile(np.asarray(GRID_HIGH, dtype=np.float32), GRID_CELLS), [3.0],
                           np.full(MAX_WORDS, len(VOCAB) - 1, dtype=np.float32)])
    return spaces.Box(low=np.zeros(TOKEN_OBS_DIM, dtype=np.float32), high=high.astype(np.float32), dtype=np.float32)


def _minigrid():
    try:
        import minigrid  # noqa: F401  (registers the BabyAI ids)
    except ImportError as e:
        raise ImportError('the BabyAI tasks need minigrid: pip install "textenv[babyai]"') from e
    return minigrid


class BabyAILanguageEnv(gym.Env):
    """A BabyAI level whose missions are restricted to a split, with text or token observations (module docstring).

    Args:
        level: ``"GoToLocal"``, ``"PickupLoc"`` or ``"PutNextLocal"``.
        split: ``"train"``, ``"heldout"``, ``"paraphrase"`` or ``"all"``.
        observation: ``"text"`` (a Dict with the mission string) or ``"tokens"`` (a flat Box).
        render_mode: ``"rgb_array"`` to render frames (:func:`record_episode` writes a GIF and a PNG strip).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    MAX_REDRAWS = 1000

    def __init__(self, level: str = "GoToLocal", split: str = "train", observation: str = "text",
                 render_mode: str | None = None):
        if level not in LEVELS:
            raise ValueError(f"level={level!r}: expected one of {list(LEVELS)}")
        if split not in SPLITS:
            raise ValueError(f"split={split!r}: expected one of {SPLITS}")
        if observation not in OBSERVATIONS:
            raise ValueError(f"observation={observation!r}: expected one of {OBSERVATIONS}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode={render_mode!r}: expected None or 'rgb_array'")
        _minigrid()
        self.level, self.split, self.observation, self.render_mode = level, split, observation, render_mode
        self.inner = gym.make(LEVELS[level], render_mode=render_mode).unwrapped
        self.action_space = self.inner.action_space
        if observation == "tokens":
            self.observation_space = token_observation_space()
        else:
            self.observation_space = spaces.Dict({
                "image": spaces.Box(0, 255, (7, 7, 3), dtype=np.uint8), "direction": spaces.Discrete(4),
                "mission": spaces.Text(max_length=200, charset=_CHARSET)})
        self.mission = ""

    def _obs(self, raw: dict):
        if self.observation == "tokens":
            return encode_observation(raw["image"], raw["direction"], self.mission)
        return {"image": raw["image"], "direction": int(raw["direction"]), "mission": self.mission}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        wanted = "train" if self.split == "paraphrase" else self.split
        for _ in range(self.MAX_REDRAWS):
            with contextlib.redirect_stdout(io.StringIO()):  # minigrid prints "Sampling rejected" on redraws
                raw, info = self.inner.reset(seed=int(self.np_random.integers(2**31)))
            if wanted == "all" or mission_split(raw["mission"]) == wanted:
                break
        else:
            raise RuntimeError(f"no {wanted!r} mission of {self.level} in {self.MAX_REDRAWS} draws")
        self.mission = paraphrase(raw["mission"], self.np_random) if self.split == "paraphrase" else raw["mission"]
        return self._obs(raw), {**info, "mission": self.mission, "original_mission": raw["mission"]}

    def step(self, action):
        raw, reward, terminated, truncated, info = self.inner.step(int(action))
        info = {**info, "success": bool(terminated and reward > 0), "mission": self.mission}
        return self._obs(raw), float(reward), bool(terminated), bool(truncated), info

    def render(self):
        return self.inner.render()

    def close(self):
        self.inner.close()

    def expert(self):
        """A :class:`minigrid.utils.baby_ai_bot.BabyAIBot` for the current episode (make one after each reset;
        ``bot.replan()`` gives the next expert action)."""
        from minigrid.utils.baby_ai_bot import BabyAIBot

        return BabyAIBot(self.inner)


def register_language_tasks() -> None:
    """Register the ``robotics/BabyAI-*-v0`` ids (idempotent; ``gymnasium.make`` needs minigrid installed)."""
    for env_id, level in LANGUAGE_IDS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point="robotics.language:BabyAILanguageEnv", kwargs={"level": level})


# ---------------------------------------------------------------- bot demonstrations
def collect_bot_episodes(env_id: str, episodes: int, seed: int = 0, noise: float = 0.0, split: str = "train",
                         progress: bool | str = False):
    """``episodes`` episodes of BabyAI's bot on ``env_id`` (token observations), as :class:`robotics.datasets.Episode`
    records, and their missions.

    With ``noise > 0`` each step is, with that probability, a uniformly random action instead of the bot's; the bot
    is told the action taken (``BabyAIBot.replan(action_taken)``) and plans from there, e.g. drops what a random
    pickup lifted: the noisy-bot data of offline RL. The ``k``-th episode tried resets with seed ``seed + k``. Now
    and then the bot cannot recover from a random action (minigrid raises an ``AssertionError`` or a
    ``DisappearedBoxError``): that episode is dropped and the next seed tried; each kept episode's seed is in
    ``Episode.seed``. Without noise a bot failure is an error.

    Returns ``(episodes, missions, dropped)``.
    """
    from minigrid.utils.baby_ai_bot import DisappearedBoxError
    from tqdm.auto import tqdm

    from robotics.datasets import Episode

    if episodes < 1:
        raise ValueError(f"episodes={episodes} must be >= 1")
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise={noise} must be in [0, 1]")
    env = gym.make(env_id, split=split, observation="tokens").unwrapped
    rng = np.random.default_rng([seed, 7919])
    out, missions, dropped, in_a_row, k = [], [], 0, 0, 0
    bar = tqdm(total=episodes, desc=progress if isinstance(progress, str) else "bot demos", unit="ep",
               disable=not progress, mininterval=1.0)
    try:
        while len(out) < episodes:
            obs, info = env.reset(seed=seed + k)
            k += 1
            bot, taken = env.expert(), None
            frames, actions, rewards, terms, truncs = [obs], [], [], [], []
            try:
                while True:
                    planned = int(bot.replan(taken))
                    random_step = noise > 0 and rng.random() < noise
                    taken = int(rng.integers(env.action_space.n)) if random_step else planned
                    obs, reward, terminated, truncated, _ = env.step(taken)
                    frames.append(obs)
                    actions.append(taken)
                    rewards.append(reward)
                    terms.append(terminated)
                    truncs.append(truncated)
                    if terminated or truncated:
                        break
            except (AssertionError, DisappearedBoxError) as err:
                if noise == 0:
                    raise RuntimeError(f"BabyAI's bot failed on {env_id} seed {seed + k - 1} without noise: "
                                       f"{type(err).__name__}: {err}") from err
                dropped, in_a_row = dropped + 1, in_a_row + 1
                if in_a_row == 100:
                    raise RuntimeError(f"BabyAI's bot failed on 100 episodes in a row of {env_id} with noise={noise}; "
                                       f"lower the noise") from err
                continue
            in_a_row = 0
            out.append(Episode(np.stack(frames), np.asarray(actions, dtype=np.int64),
                               np.asarray(rewards, dtype=np.float64), np.asarray(terms), np.asarray(truncs),
                               seed + k - 1))
            missions.append(info["mission"])
            bar.update(1)
    finally:
        bar.close()
        env.close()
    return out, missions, dropped


def collect_language_datasets(env_id: str, episodes: int = 2000, seed: int = 0, noise: float = 0.3,
                              kinds: tuple[str, ...] = ("bot", "noisy-bot"), overwrite: bool = False,
                              progress: bool = True) -> dict[str, dict]:
    """Write the Minari datasets of ``env_id``: ``bot`` (the bot's demonstrations on the ``train`` split) and
    ``noisy-bot`` (each action random with probability ``noise``), token observations, missions stored in
    ``textenv.json`` (one per episode, with the seeds). Existing datasets are kept (not collected again) unless
    ``overwrite``. Returns a summary per dataset id (episodes, transitions, success rate, dropped, seconds)."""
    from robotics.datasets import LANGUAGE_KINDS, _path, dataset_id, write_dataset

    if env_id not in LANGUAGE_IDS:
        raise ValueError(f"env_id={env_id!r}: expected one of {list(LANGUAGE_IDS)}")
    bad = [kind for kind in kinds if kind not in LANGUAGE_KINDS]
    if bad or not kinds:
        raise ValueError(f"kinds={kinds!r}: expected a non-empty selection of {LANGUAGE_KINDS}")
    if "noisy-bot" in kinds and not 0.0 < noise <= 1.0:
        raise ValueError(f"noise={noise}: noisy-bot needs a random-action probability in (0, 1]")
    summaries = {}
    for kind in kinds:
        name = dataset_id(env_id, kind)
        if _path(name).exists() and not overwrite:
            summaries[name] = {"kept": True}
            continue
        tick = time.perf_counter()
        kind_noise = noise if kind == "noisy-bot" else 0.0
        eps, missions, dropped = collect_bot_episodes(env_id, episodes, seed=seed, noise=kind_noise,
                                                      progress=f"{kind} {env_id.split('/')[-1]}" if progress else False)
        seconds = time.perf_counter() - tick
        success = float(np.mean([ep.terminations[-1] and ep.rewards[-1] > 0 for ep in eps]))
        summary = {"episodes": len(eps), "transitions": int(sum(len(ep) for ep in eps)), "success": success,
                   "noise": kind_noise, "dropped": dropped, "collect_s": seconds}
        write_dataset(name, eps, env_id, ref_min_score=0.0, ref_max_score=1.0, algorithm_name=f"BabyAIBot ({kind})",
                      description=f"BabyAI's bot on {env_id} (train split){', noisy' if kind_noise else ''}",
                      overwrite=overwrite, env_kwargs={"observation": "tokens", "split": "train"},
                      extra_metadata={**summary, "missions": missions, "seeds": [ep.seed for ep in eps]})
        summaries[name] = summary
    return summaries


# ---------------------------------------------------------------- pictures
ACTION_NAMES = ("left", "right", "forward", "pickup", "drop", "toggle", "done")


def record_episode(policy, env_id: str, path: str, seed: int = 0, split: str = "train", frames: int = 8,
                   deterministic: bool = False) -> dict:
    """Play one episode of ``policy`` and write ``<path>.gif`` (every step, the mission as its caption) and
    ``<path>.png`` (a strip of up to ``frames`` evenly spaced steps under the instruction, each with the action
    taken). Returns the mission, the steps and whether it succeeded. Needs no GL: minigrid draws with numpy."""
    from pathlib import Path

    from matplotlib.figure import Figure  # not pyplot: the caller's backend is left alone
    from PIL import Image, ImageDraw

    env = gym.make(env_id, split=split, observation="tokens", render_mode="rgb_array")
    obs, info = env.reset(seed=seed)
    shots, actions, done, success = [env.render()], [], False, False
    while not done:
        action = int(policy.act(np.asarray(obs)[None], deterministic=deterministic).action[0])
        obs, _, terminated, truncated, step_info = env.step(action)
        shots.append(env.render())
        actions.append(ACTION_NAMES[action])
        done, success = terminated or truncated, step_info["success"]
    env.close()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    gif = []
    for k, shot in enumerate(shots):
        image = Image.fromarray(shot)
        draw = ImageDraw.Draw(image)
        draw.text((4, 4), f'"{info["mission"]}"', fill=(255, 255, 255))
        draw.text((4, 16), f"t={k}", fill=(255, 255, 255))
        gif.append(image)
    gif[0].save(path.with_suffix(".gif"), save_all=True, append_images=gif[1:], duration=300, loop=0)
    picks = np.unique(np.linspace(0, len(shots) - 1, min(frames, len(shots))).round().astype(int))
    fig = Figure(figsize=(2.0 * len(picks), 2.5))
    axes = fig.subplots(1, len(picks), squeeze=False)
    for ax, k in zip(axes[0], picks):
        ax.imshow(shots[k])
        ax.set_title(f"t={k}" + (f" → {actions[k]}" if k < len(actions) else (" ✓" if success else " ✗")), fontsize=8)
        ax.axis("off")
    fig.suptitle(f'"{info["mission"]}" ({split} split, {"success" if success else "failure"} in {len(actions)} steps)',
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path.with_suffix(".png"), dpi=90)
    return {"mission": info["mission"], "steps": len(actions), "success": bool(success)}
