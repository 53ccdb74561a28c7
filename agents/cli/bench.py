"""``textenv bench``: text agents × seeds on one env at equal budgets → a results table and a frontier plot.

Every agent sees the same number of completions per iteration (``completions_per_iter``: PPO as that many
prompts, the group estimators as ``completions_per_iter / K`` prompts × K) and the same number of iterations,
learning rate and KL coefficient. Each trained policy is then evaluated on the same held-out prompts: proxy
reward, gold reward, KL to the initial model (summed log-ratio), wall time of training. Best-of-N from the
initial model is the inference-time reference point (analytic KL).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agents.core.run import check_range

AGENTS = ("ppo", "grpo", "rloo", "reinforce")


@dataclass
class BenchConfig:
    """What ``textenv bench`` runs."""

    agents: tuple[str, ...] = AGENTS
    """Agents to compare (ppo, grpo, rloo, reinforce)."""
    seeds: tuple[int, ...] = (0, 1)
    """Seeds per agent."""
    env_id: str = "textenv/Sentiment-v1"
    """Text env to train on."""
    iterations: int = 40
    """Iterations per run."""
    completions_per_iter: int = 64
    """Completions per iteration for every agent."""
    group_size: int = 4
    """K of the group estimators."""
    lr: float = 3e-4
    """Learning rate of every agent."""
    kl_coef: float = 0.05
    """β of the env's KL shaping for every agent."""
    eval_prompts: int = 256
    """Held-out prompts for the final evaluation."""
    best_of_n: tuple[int, ...] = (1, 2, 4, 8, 16)
    """N values of the best-of-N reference (empty: skip)."""
    threads: int = 1
    """torch threads."""

    def __post_init__(self):
        unknown = [a for a in self.agents if a not in AGENTS]
        if unknown or not self.agents:
            raise ValueError(f"agents={self.agents!r}; expected a non-empty subset of {AGENTS}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds={self.seeds!r}; expected at least one seed, no repeats")
        if any(n < 1 for n in self.best_of_n):
            raise ValueError(f"best_of_n={self.best_of_n!r}; every N must be >= 1 (empty: skip best-of-N)")
        for name in ("iterations", "completions_per_iter", "group_size", "eval_prompts", "threads"):
            check_range(name, getattr(self, name), 1, integer=True)
        if self.completions_per_iter % self.group_size:
            raise ValueError(f"completions_per_iter={self.completions_per_iter} must be a multiple of group_size={self.group_size}")


def agent_config(name: str, bench: BenchConfig, seed: int):
    """The training config of agent ``name`` under the bench's shared budget."""
    from agents.text.pg import PGConfig
    from agents.text.ppo import PPOConfig

    shared = dict(env_id=bench.env_id, iterations=bench.iterations, lr=bench.lr, kl_coef=bench.kl_coef, seed=seed,
                  threads=bench.threads)
    if name == "ppo":
        return PPOConfig(prompts_per_iter=bench.completions_per_iter, **shared)
    return PGConfig(estimator=name, group_size=bench.group_size,
                    prompts_per_iter=bench.completions_per_iter // bench.group_size, **shared)


def run_bench(bench: BenchConfig, out: str | Path, progress: bool = True) -> list[dict]:
    """Train every agent × seed into ``out/<agent>-s<seed>`` (resuming finished runs), evaluate, and write
    ``results.json``, ``results.md`` and ``frontier.png``; returns the rows."""
    from agents.text.evaluation import best_of_n, eval_prompts, generate
    from agents.policies.lm import LMPolicy
    from agents.text.pg import train_pg
    from agents.text.ppo import train_ppo
    from agents.text.pipeline import plot_frontier

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    prompts = eval_prompts(bench.eval_prompts)
    rows, curves = [], {}
    start = LMPolicy.from_pretrained(_env_model(agent_config(bench.agents[0], bench, bench.seeds[0])))
    for name in bench.agents:
        for seed in bench.seeds:
            config = agent_config(name, bench, seed)
            tick = time.perf_counter()
            trainer = train_ppo if name == "ppo" else train_pg
            result = trainer(config, out / f"{name}-s{seed}", progress=progress)
            samples = generate(result.policy, prompts, bench.env_id, config.max_new_tokens, reference=start, seed=1000 + seed)
            summary = samples.summary()
            rows.append({"agent": name, "seed": seed, **summary, "train_s": result.rows[-1]["time_s"],
                         "total_s": time.perf_counter() - tick})
            curves.setdefault(name, []).append(result.rows)
    base = generate(start, prompts, bench.env_id, reference=start, seed=999).summary()
    bon = best_of_n(start, prompts, tuple(bench.best_of_n)) if bench.best_of_n else []  # the agents' prompts
    (out / "results.json").write_text(json.dumps({"config": bench.__dict__, "rows": rows, "base": base, "best_of_n": bon},
                                                 indent=2, default=list) + "\n")
    (out / "results.md").write_text(format_results(rows, base, bon, bench))
    points = {key: {f"{r['agent']} s{r['seed']} (eval)": (r["kl"], r[key]) for r in rows} for key in ("gold", "proxy")}
    plot_frontier({f"{n} s{bench.seeds[i]}": c for n, cs in curves.items() for i, c in enumerate(cs)}, bon,
                  out / "frontier.png", points)
    return rows


def _env_model(config) -> str:
    """The model a text env id uses by default (the built-in LM for the textenv ids)."""
    import gymnasium as gym

    env = gym.make_vec(config.env_id, num_envs=1, kl_coef=0.0, **config.env_kwargs)
    return env.unwrapped.task.model_name


def format_results(rows: list[dict], base: dict, bon: list[dict], bench: BenchConfig) -> str:
    """The markdown table: mean ± std over seeds per agent, then the base model and best-of-N."""
    lines = [f"Env `{bench.env_id}`, {bench.iterations} iterations × {bench.completions_per_iter} completions, "
             f"lr {bench.lr}, β {bench.kl_coef}, K {bench.group_size}, seeds {list(bench.seeds)}, "
             f"{bench.threads} torch thread(s); evaluated on {bench.eval_prompts} held-out prompts (best-of-N too); "
             f"mean ± sample std over seeds. proxy = the env's reward model (what the agents are trained on); "
             f"gold = the env's gold reward (info['reward_gold']), never seen in training.", "",
             "| agent | proxy | gold | KL to initial | length | train time (s) |", "|---|---|---|---|---|---|"]
    for name in dict.fromkeys(r["agent"] for r in rows):
        group = [r for r in rows if r["agent"] == name]

        def cell(key, fmt="+.3f", group=group):
            values = np.array([r[key] for r in group])
            return f"{values.mean():{fmt}} ± {values.std(ddof=1):.3f}" if len(values) > 1 else f"{values.mean():{fmt}}"

        lines.append(f"| {name} | {cell('proxy')} | {cell('gold')} | {cell('kl', '.2f')} | {cell('length', '.1f')} | "
                     f"{cell('train_s', '.0f')} |")
    lines.append(f"| initial model | {base['proxy']:+.3f} | {base['gold']:+.3f} | 0 | {base['length']:.1f} | — |")
    for b in bon:
        lines.append(f"| best-of-{b['n']} | {b['proxy']:+.3f} | {b['gold']:+.3f} | {b['kl']:.2f} (analytic) | — | — |")
    return "\n".join(lines) + "\n"
