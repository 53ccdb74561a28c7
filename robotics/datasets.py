"""Offline datasets in Minari format, written locally, and their loader into training arrays.

D4RL's recipe on our tasks (the collection itself, which trains the policies, is ``textenv datasets collect`` in
:mod:`agents.offline.collect`):

| kind | data |
|---|---|
| ``random`` | uniformly random actions |
| ``medium`` | a policy stopped at about a third of expert return, acting stochastically |
| ``expert`` | the fully trained policy, acting stochastically |
| ``medium-replay`` | every episode the training run saw until it reached the medium policy |
| ``medium-expert`` | ``medium`` and ``expert`` together |

Ids follow Minari's ``namespace/env/name-vN``: ``robotics/hopper/medium-v0`` for ``Hopper-v5``. Datasets live
under ``MINARI_DATASETS_PATH`` (default ``~/.minari/datasets``), are written atomically (into a temporary root,
then renamed into place) and carry D4RL's reference returns (``ref_min_score``/``ref_max_score`` in the
metadata), so ``100·(R − R_random)/(R_expert − R_random)`` is the score D4RL reports. Nothing here downloads:
a missing id is an error listing the local ones.

Minari stores ``T + 1`` observations for the ``T`` actions of an episode; :func:`load_dataset` aligns them
per episode (``next_observations[t] == observations[t + 1]`` within an episode, never across two) and keeps
``terminals`` (the MDP ended: no bootstrap) apart from ``timeouts`` (cut by a time limit: bootstrap).

Needs the ``offline`` extra: ``pip install "textenv[offline]"`` (``minari[hdf5]``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np

KINDS = ("random", "medium", "expert", "medium-replay", "medium-expert")
LANGUAGE_KINDS = ("bot", "noisy-bot")
"""The BabyAI tasks' datasets (:mod:`robotics.language`): the bot's demonstrations, and the bot mixed with random actions."""
NAMESPACE = "robotics"


class DatasetError(ValueError):
    """A dataset on disk that cannot be used: unreadable, inconsistent, or for another env."""


def _minari():
    try:
        import minari
    except ImportError as err:  # pragma: no cover - the extra is part of dev
        raise ImportError('offline datasets need Minari: pip install "textenv[offline]"') from err
    return minari


def _package_version() -> str:
    """The installed textenv distribution's version (read from its metadata: robotics never imports textenv)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("textenv")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


def _replace_folder(new: Path, target: Path, old: Path) -> None:
    """``new`` in the place of ``target``, the old one kept as ``old`` between the two renames, then deleted.

    The same two renames as :func:`textenv.checkpoint.replace_folder`, of which this is a copy because robotics
    never imports textenv (the two packages stay independent of each other)."""
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


def datasets_root() -> Path:
    """Where datasets live: ``$MINARI_DATASETS_PATH`` or Minari's default ``~/.minari/datasets``."""
    return Path(os.environ.get("MINARI_DATASETS_PATH") or Path.home() / ".minari" / "datasets")


def dataset_id(env_id: str, kind: str, version: int = 0) -> str:
    """The Minari id of a dataset of ``env_id``.

    >>> dataset_id("Hopper-v5", "medium-replay")
    'robotics/hopper/medium-replay-v0'
    """
    if kind not in KINDS + LANGUAGE_KINDS:
        raise ValueError(f"unknown dataset kind {kind!r}; expected one of {KINDS + LANGUAGE_KINDS}")
    name = env_id.split("/")[-1].split("-v")[0].lower()
    return f"{NAMESPACE}/{name}/{kind}-v{version}"


def _path(dataset_id: str) -> Path:
    return datasets_root() / dataset_id


def local_dataset_ids() -> list[str]:
    """Every dataset id under :func:`datasets_root` (any namespace), sorted."""
    root = datasets_root()
    if not root.is_dir():
        return []
    return sorted(str(p.parent.parent.relative_to(root)) for p in root.glob("**/data/metadata.json")
                  if not any(part.startswith(".") for part in p.relative_to(root).parts))


# ---------------------------------------------------------------- collection
@dataclass
class Episode:
    """One episode: ``T + 1`` observations, ``T`` actions, rewards and end flags."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    seed: int | None = None

    def __len__(self) -> int:
        return len(self.actions)

    @property
    def ret(self) -> float:
        return float(np.sum(self.rewards))


def rollout_episodes(env: gym.Env, act: Callable[[np.ndarray], np.ndarray], steps: int, seed: int = 0,
                     progress: bool | str = False) -> list[Episode]:
    """Exactly ``steps`` steps of ``act(obs) -> action`` in ``env``, as episodes (as D4RL does, the last one is
    cut short and marked truncated). Episode ``k`` resets with seed ``seed + k``; actions are clipped to the
    action space's bounds before they are stored and applied."""
    from tqdm.auto import tqdm

    if steps < 1:
        raise ValueError(f"steps={steps} must be >= 1")
    box = isinstance(env.action_space, gym.spaces.Box)
    episodes: list[Episode] = []
    bar = tqdm(total=steps, desc=progress if isinstance(progress, str) else "collect", unit="step",
               disable=not progress, mininterval=1.0)
    done_steps = 0
    while done_steps < steps:
        k = len(episodes)
        obs, _ = env.reset(seed=seed + k)
        frames, actions, rewards, terms, truncs = [obs], [], [], [], []
        while True:
            action = np.asarray(act(obs))
            if box:
                action = np.clip(action, env.action_space.low, env.action_space.high).astype(env.action_space.dtype)
            obs, reward, terminated, truncated, _ = env.step(action)
            frames.append(obs)
            actions.append(action)
            rewards.append(reward)
            done_steps += 1
            cut = done_steps >= steps
            terms.append(bool(terminated))
            truncs.append(bool(truncated) or (cut and not terminated))
            if terminated or truncated or cut:
                break
        bar.update(len(actions))
        episodes.append(Episode(np.stack(frames), np.stack(actions), np.asarray(rewards, dtype=np.float64),
                                np.asarray(terms), np.asarray(truncs), seed + k))
    bar.close()
    return episodes


class EpisodeRecorder(gym.Wrapper):
    """Records every finished episode that passes through (observations, actions as applied, rewards, flags)
    into ``episodes``; D4RL's ``medium-replay`` is what a training run's envs recorded this way."""

    def __init__(self, env: gym.Env, episodes: list[Episode] | None = None):
        super().__init__(env)
        self.episodes = episodes if episodes is not None else []
        self._frames: list = []

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._frames, self._steps = [obs], []
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._frames.append(obs)
        self._steps.append((np.array(action, copy=True), float(reward), bool(terminated), bool(truncated)))
        if terminated or truncated:
            actions, rewards, terms, truncs = zip(*self._steps)
            self.episodes.append(Episode(np.stack(self._frames), np.stack(actions), np.asarray(rewards),
                                         np.asarray(terms), np.asarray(truncs)))
            self._frames, self._steps = [], []
        return obs, reward, terminated, truncated, info


@contextmanager
def _minari_root(root: Path):
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        yield
    finally:
        if old is None:
            del os.environ["MINARI_DATASETS_PATH"]
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


def write_dataset(dataset_id: str, episodes: Sequence[Episode], env_id: str, ref_min_score: float,
                  ref_max_score: float, algorithm_name: str, description: str, overwrite: bool = False,
                  extra_metadata: dict | None = None, env_kwargs: dict | None = None) -> Path:
    """Write ``episodes`` as the Minari dataset ``dataset_id`` (HDF5) and return its folder.

    The dataset is created under a temporary root beside the real one and renamed into place, so a crash never
    leaves half a dataset under the id. ``overwrite=False`` refuses an existing id. ``extra_metadata`` is stored
    in ``textenv.json`` beside Minari's metadata (collection time, behaviour returns...). ``env_kwargs`` are
    the ``gymnasium.make`` keyword arguments the episodes were collected with (stored in the env spec).
    """
    minari = _minari()
    from minari.data_collector import EpisodeBuffer

    if not episodes:
        raise ValueError(f"no episodes to write for {dataset_id!r}")
    if not ref_max_score > ref_min_score:
        raise ValueError(f"ref_max_score={ref_max_score} must exceed ref_min_score={ref_min_score}")
    target = _path(dataset_id)
    if target.exists() and not overwrite:
        raise FileExistsError(f"dataset {dataset_id!r} already exists at {target}; pass overwrite=True to replace it")
    root = datasets_root()
    root.mkdir(parents=True, exist_ok=True)
    tmp_root = root / f".tmp-{os.getpid()}-{time.monotonic_ns()}"
    env_spec = env_id
    if env_kwargs:
        spec = gym.spec(env_id)
        env_spec = dataclasses.replace(spec, kwargs={**spec.kwargs, **env_kwargs})
    buffers = [EpisodeBuffer(id=k, seed=ep.seed, observations=ep.observations, actions=ep.actions,
                             rewards=list(ep.rewards), terminations=list(ep.terminations),
                             truncations=list(ep.truncations), infos={}) for k, ep in enumerate(episodes)]
    try:
        with _minari_root(tmp_root), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Minari warns about the optional metadata we leave out
            minari.create_dataset_from_buffers(
                dataset_id, buffers, env=env_spec, algorithm_name=algorithm_name, author="textenv",
                author_email="textenv@users.noreply.invalid", code_permalink="https://github.com/textenv/textenv",
                ref_min_score=float(ref_min_score), ref_max_score=float(ref_max_score), description=description,
                data_format="hdf5", requirements=[f"textenv=={_package_version()}"])
        made = tmp_root / dataset_id
        (made / "data" / "textenv.json").write_text(json.dumps(extra_metadata or {}, indent=2) + "\n")
        target.parent.mkdir(parents=True, exist_ok=True)
        _replace_folder(made, target, target.with_name(f".{target.name}.old"))  # hidden: never listed as a dataset
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    return target


# ---------------------------------------------------------------- loading
@dataclass
class OfflineData:
    """A dataset as flat transition arrays (``N`` transitions), with episode boundaries.

    ``next_observations[i]`` is the observation after ``actions[i]`` in the same episode; ``terminals`` marks
    the MDP's end (no bootstrap), ``timeouts`` a cut by a time limit or by the dataset's size (bootstrap).
    Episode ``k`` is ``slice(episode_starts[k], episode_starts[k + 1])``.
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray
    episode_starts: np.ndarray
    dataset_id: str
    env_id: str | None
    observation_space: gym.Space
    action_space: gym.Space
    ref_min_score: float | None = None
    ref_max_score: float | None = None

    def __len__(self) -> int:
        return len(self.actions)

    @property
    def num_episodes(self) -> int:
        return len(self.episode_starts) - 1

    def episode(self, k: int) -> slice:
        return slice(int(self.episode_starts[k]), int(self.episode_starts[k + 1]))

    def episode_returns(self) -> np.ndarray:
        return np.add.reduceat(self.rewards.astype(np.float64), self.episode_starts[:-1]) if len(self) else np.zeros(0)

    def normalized_score(self, returns):
        """D4RL's ``100·(R − R_random)/(R_expert − R_random)`` with the dataset's reference returns."""
        if self.ref_min_score is None or self.ref_max_score is None:
            raise DatasetError(f"dataset {self.dataset_id!r} stores no reference returns")
        return 100.0 * (np.asarray(returns, dtype=np.float64) - self.ref_min_score) / (self.ref_max_score - self.ref_min_score)

    def check_env(self, env: gym.Env | gym.spaces.Space | str, action_space: gym.Space | None = None) -> None:
        """Raise :class:`DatasetError` unless the dataset's spaces match ``env``'s (an env, an id, or the
        observation space followed by ``action_space``): shapes, dtypes kinds and action bounds."""
        if isinstance(env, str):
            env = gym.make(env)
        if isinstance(env, gym.Space) and action_space is None:
            raise TypeError("check_env(observation_space) needs the action_space too")
        obs_space, act_space = (env, action_space) if isinstance(env, gym.Space) else (env.observation_space, env.action_space)
        for what, mine, theirs in (("observation", self.observation_space, obs_space), ("action", self.action_space, act_space)):
            same = type(mine) is type(theirs) and mine.shape == theirs.shape
            if same and isinstance(mine, gym.spaces.Box):
                same = np.allclose(mine.low, theirs.low) and np.allclose(mine.high, theirs.high)
            if not same:
                raise DatasetError(f"dataset {self.dataset_id!r} has {what} space {mine}, but the env has {theirs}")


def load_dataset(dataset_id: str, env: gym.Env | str | None = None) -> OfflineData:
    """Load a local Minari dataset into :class:`OfflineData` (float32 arrays; checked against ``env`` if given).

    Raises ``FileNotFoundError`` listing the local ids when ``dataset_id`` is not there (nothing is downloaded)
    and :class:`DatasetError` when the files are unreadable or inconsistent, or the spaces differ from ``env``'s.
    """
    _minari()
    from minari.dataset.minari_dataset import MinariDataset

    path = _path(dataset_id)
    data_path = path / "data"
    if not (data_path / "metadata.json").is_file():
        local = local_dataset_ids()
        raise FileNotFoundError(
            f"no dataset {dataset_id!r} under {datasets_root()} (MINARI_DATASETS_PATH); local datasets: "
            f"{local or 'none'}. Collect one with `textenv datasets collect --env-id Hopper-v5`; datasets are never "
            f"downloaded")
    try:
        dataset = MinariDataset(data_path)
        metadata = dataset.storage.metadata
        episodes = list(dataset.iterate_episodes())
    except Exception as err:  # h5py, json and Minari raise many kinds for a damaged file
        raise DatasetError(f"dataset {dataset_id!r} at {path} is unreadable ({type(err).__name__}: {err}); delete "
                           f"it and collect it again") from err
    if not episodes:
        raise DatasetError(f"dataset {dataset_id!r} at {path} holds no episodes")
    obs, nxt, acts, rews, terms, touts, starts = [], [], [], [], [], [], [0]
    for k, ep in enumerate(episodes):
        o, a = np.asarray(ep.observations), np.asarray(ep.actions)
        T = len(a)
        if len(o) != T + 1 or len(ep.rewards) != T or len(ep.terminations) != T or len(ep.truncations) != T:
            raise DatasetError(f"dataset {dataset_id!r}: episode {k} has {len(o)} observations, {T} actions, "
                               f"{len(ep.rewards)} rewards; expected T + 1 observations for T actions")
        if not (np.isfinite(o).all() and np.isfinite(a).all() and np.isfinite(ep.rewards).all()):
            raise DatasetError(f"dataset {dataset_id!r}: episode {k} holds non-finite values")
        obs.append(o[:-1])
        nxt.append(o[1:])
        acts.append(a.reshape(T, -1) if a.ndim == 1 and isinstance(dataset.action_space, gym.spaces.Box) else a)
        rews.append(ep.rewards)
        terms.append(ep.terminations)
        touts.append(ep.truncations)
        starts.append(starts[-1] + T)
    spec = metadata.get("env_spec")
    env_id = json.loads(spec)["id"] if isinstance(spec, str) else getattr(spec, "id", None)
    if env_id is not None and (not isinstance(env_id, str) or ":" in env_id):
        raise DatasetError(  # "module:Env" would make gym.make import a module the dataset's metadata chose
            f"dataset {dataset_id!r} names its env {env_id!r}; an id with ':' is an import path, and a dataset is data, "
            f"never code: collect it again, or correct env_spec in its metadata to a registered id such as 'Hopper-v5'")
    data = OfflineData(
        np.concatenate(obs).astype(np.float32), np.concatenate(acts).astype(np.float32),
        np.concatenate(rews).astype(np.float32), np.concatenate(nxt).astype(np.float32),
        np.concatenate(terms).astype(bool), np.concatenate(touts).astype(bool), np.asarray(starts, dtype=np.int64),
        dataset_id, env_id, dataset.observation_space, dataset.action_space,
        metadata.get("ref_min_score"), metadata.get("ref_max_score"))
    if env is not None:
        data.check_env(env)
    return data


def dataset_info(dataset_id: str) -> dict:
    """Size, steps, episodes, returns and reference scores of a local dataset (loads it), with the collection
    details of its ``textenv.json``."""
    path = _path(dataset_id)
    data = load_dataset(dataset_id)
    returns = data.episode_returns()
    extra_file = path / "data" / "textenv.json"
    extra = json.loads(extra_file.read_text()) if extra_file.is_file() else {}
    size = sum(f.stat().st_size for f in path.glob("**/*") if f.is_file())
    info = {"id": dataset_id, "env_id": data.env_id, "steps": len(data), "episodes": data.num_episodes,
            "mean_return": float(returns.mean()), "max_return": float(returns.max()), "size_mb": size / 2**20,
            "ref_min_score": data.ref_min_score, "ref_max_score": data.ref_max_score, **extra}
    if data.ref_min_score is not None and data.ref_max_score is not None:
        info["normalized_mean"] = float(data.normalized_score(returns.mean()))
    return info
