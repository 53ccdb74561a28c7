"""RLAIF with a real judge: SmolLM2-135M-Instruct judges the built-in world's reviews, then a policy trains on it.

1. **Judge quality** (``--part measure``). SmolLM2-135M-Instruct (``textenv models fetch smollm2-135m-instruct``)
   as a pointwise judge, its prompt rendered with its own chat template (:mod:`textenv.rewards.judge`). Four
   rubrics are scored on a *selection set* of preference records from **training** prompts; the one with the best
   gold agreement there is the judge, and all four are then reported on held-out records (the choice is never
   made on them). Also on the held-out records: the pairwise judge (both orders averaged; each order alone and
   the mean P(first) show its position bias), the score–length correlation of each scorer, and, on the same
   pairs, the built-in proxy reward model and the built-in-LM judge. The judge costs a 30-layer forward per
   completion at one thread, so the held-out set is a seeded random subset of records (its size and the time all
   records would take are reported).
2. **RL against the judge** (``--part train``). GRPO (``agents.PGConfig(estimator="grpo")``) on
   ``textenv/Sentiment-v1`` with the chosen judge as ``reward_model``; the policy is the built-in LM. Twice, same
   seed: the judge alone, and the judge with its length trend removed (``length_debias``: a
   :class:`textenv.rewards.CompositeReward` term ``−b·(L − L̄)`` with ``b`` the least-squares slope of the judge's
   score on completion length, fitted on the selection set; see the results file for why this mitigation and not
   a length penalty). Gold sentiment (``info["reward_gold"]``, never trained on), gold fluency (grammar parse
   rate) and completion length on held-out prompts before and after, and the judge's own score.

    OMP_NUM_THREADS=1 python benchmarks/rlaif_judge.py --threads 1

Writes ``benchmarks/results/rlaif_judge.json`` (each part updates its own section) and ``rlaif_judge.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from textenv import models, world
from textenv.lm import load_causal_lm, load_tokenizer
from textenv.rewards import CompositeReward, HFRewardModel, PairwiseJudge, PointwiseJudge
from textenv.rewards import judge as J
from textenv.rm import evaluate_reward_model, load_preferences

RESULTS = Path(__file__).parent / "results"
RUBRICS = {  # name: (template, options, prefill); every option is one SmolLM2 token
    "opinion": (J.SENTIMENT_TEMPLATE, J.SENTIMENT_OPTIONS, J.SENTIMENT_PREFILL),
    "classify": (J.SENTIMENT_CLASSIFY_TEMPLATE, J.SENTIMENT_OPTIONS, J.SENTIMENT_CLASSIFY_PREFILL),
    "happy": (J.SENTIMENT_HAPPY_TEMPLATE, J.HAPPY_OPTIONS, J.SENTIMENT_HAPPY_PREFILL),
    "rating 1-5": (J.SENTIMENT_RATING_TEMPLATE, J.RATING_OPTIONS, ""),
}


def sample_records(path, n: int, seed: int):
    records = load_preferences(path)
    pick = np.sort(np.random.default_rng(seed).choice(len(records), size=min(n, len(records)), replace=False))
    return records, [records[i] for i in pick]


def gold_pairs(records) -> list[tuple[str, str, str]]:
    """(prompt, gold-better, gold-worse) for every ranked pair whose completions differ in gold."""
    out = []
    for r in records:
        for w, l in r.pairs:
            if r.gold[w] != r.gold[l]:
                better, worse = (w, l) if r.gold[w] > r.gold[l] else (l, w)
                out.append((r.prompt, r.completions[better], r.completions[worse]))
    return out


def score_table(scorer, records, tokenizer) -> dict:
    t = time.perf_counter()
    m = evaluate_reward_model(scorer, records, tokenizer)
    seconds = time.perf_counter() - t
    return {"gold_accuracy": m["gold_accuracy"], "gold_spearman": m["gold_spearman"], "length_pearson": m["length_pearson"],
            "gold_length_pearson": m["gold_length_pearson"], "score_mean": m["score_mean"], "score_std": m["score_std"],
            "completions": m["completions"], "seconds": seconds, "s_per_completion": seconds / m["completions"],
            "_scores": m["arrays"]["scores"], "_lengths": m["arrays"]["lengths"]}


def judge_for(rubric: str, model, tokenizer) -> PointwiseJudge:
    template, options, prefill = RUBRICS[rubric]
    return PointwiseJudge(model, template, options, tokenizer=tokenizer, prefill=prefill, batch_size=16)


def measure(args, smol, smol_tok, world_tok) -> dict:
    proxy = world.build_proxy()
    _, selection = sample_records(proxy / "preferences-train.jsonl", args.selection_records, args.seed)
    held_all, held = sample_records(proxy / "preferences-eval.jsonl", args.eval_records, args.seed + 1)
    out = {"selection_records": len(selection), "selection_pairs": len(gold_pairs(selection)),
           "eval_records": len(held), "eval_pairs": len(gold_pairs(held)), "eval_records_all": len(held_all),
           "eval_pairs_all": len(gold_pairs(held_all)), "selection": {}, "held_out": {}}
    arrays = {}
    for name in RUBRICS:  # choose the rubric on training prompts only
        row = score_table(judge_for(name, smol, smol_tok), selection, world_tok)
        out["selection"][name] = {k: v for k, v in row.items() if not k.startswith("_")}
        if name == next(iter(RUBRICS)):
            row_all = row["s_per_completion"] * sum(r.k for r in held_all) * len(RUBRICS)
            out["all_records_pointwise_s_estimate"] = row_all
        print(f"selection  {name:12s} gold acc {row['gold_accuracy']:.3f}  len r {row['length_pearson']:+.2f}  "
              f"{row['s_per_completion']:.3f} s/completion", flush=True)
        arrays[name] = row["_scores"], row["_lengths"]
    chosen = max(RUBRICS, key=lambda n: out["selection"][n]["gold_accuracy"])
    scores, lengths = arrays[chosen]
    slope, intercept = np.polyfit(lengths.astype(float), scores, 1)
    out.update(chosen=chosen, length_slope=float(slope), length_mean=float(lengths.mean()))
    print(f"chosen rubric: {chosen}; judge score vs length slope {slope:+.4f}/token on the selection set", flush=True)

    for name in RUBRICS:
        row = score_table(judge_for(name, smol, smol_tok), held, world_tok)
        out["held_out"][f"SmolLM2 pointwise, {name}"] = {k: v for k, v in row.items() if not k.startswith("_")}
        print(f"held-out   {name:12s} gold acc {row['gold_accuracy']:.3f}", flush=True)
    lm = world.lm_path()
    for label, scorer in (("proxy reward model (built-in)", HFRewardModel(world.proxy_rm_path(), normalize=False)),
                          ("built-in LM pointwise, `… i would` → ` highly`/` not`",
                           PointwiseJudge(lm, J.REVIEW_CONTINUATION, J.REVIEW_OPTIONS))):
        row = score_table(scorer, held, world_tok)
        out["held_out"][label] = {k: v for k, v in row.items() if not k.startswith("_")}
        print(f"held-out   {label} gold acc {row['gold_accuracy']:.3f}", flush=True)

    pairs = gold_pairs(held)
    pairwise = PairwiseJudge(smol, J.PAIRWISE_SENTIMENT_TEMPLATE, tokenizer=smol_tok, prefill=J.PAIRWISE_SENTIMENT_PREFILL,
                             batch_size=16)
    t = time.perf_counter()
    prompts, better, worse = map(list, zip(*pairs))
    better_first = pairwise.first_probs(prompts, better, worse)  # P(first) with the gold-better one first
    worse_first = pairwise.first_probs(prompts, worse, better)
    seconds = time.perf_counter() - t
    averaged = 0.5 * (better_first + 1 - worse_first)
    out["pairwise"] = {
        "pairs": len(pairs), "seconds": seconds, "s_per_pair_both_orders": seconds / len(pairs),
        "gold_accuracy": float(np.mean(np.where(averaged == 0.5, 0.5, averaged > 0.5))),
        "better_first_accuracy": float(np.mean(better_first > 0.5)),
        "worse_first_accuracy": float(np.mean(worse_first < 0.5)),
        "mean_p_first": float(np.mean(np.concatenate([better_first, worse_first]))),
        "order_consistent": float(np.mean((better_first > 0.5) == (worse_first < 0.5))),
        "all_pairs_s_estimate": seconds / len(pairs) * len(gold_pairs(held_all)),
    }
    print(f"pairwise   gold acc {out['pairwise']['gold_accuracy']:.3f}  mean P(first) {out['pairwise']['mean_p_first']:.2f}",
          flush=True)
    return out


class JudgeReward:
    """The env's reward: the judge (plus, optionally, the length-debias term), logging the raw judge scores.

    Handed to the env inside a function (:meth:`fn`): a config's ``env_kwargs`` is deep-copied when the run
    writes ``config.json``, and a function is copied by reference where a 0.5 GB judge object would be copied."""

    def __init__(self, judge: PointwiseJudge, tokenizer, slope: float | None = None, mean_length: float = 0.0):
        self.judge, self.seen = judge, []
        terms = {"judge": self._judge}
        if slope is not None:
            terms["length_debias"] = lambda p, c: [-slope * (len(ids) - mean_length)
                                                   for ids in tokenizer(list(c), add_special_tokens=False)["input_ids"]]
        self.reward = CompositeReward(terms) if slope is not None else self._judge

    def _judge(self, prompts, completions):
        scores = self.judge(prompts, completions)
        self.seen += scores
        return scores

    def take(self) -> float:
        mean, self.seen = float(np.mean(self.seen)) if self.seen else float("nan"), []
        return mean

    @property
    def fn(self):
        def judge_reward(prompts, completions):
            return self.reward(prompts, completions)
        return judge_reward


def evaluate_policy(policy, prompts, judge_reward: JudgeReward, proxy_rm, seed: int) -> dict:
    from agents.text.evaluation import generate
    from textenv.world import gold_fluency

    t = time.perf_counter()
    s = generate(policy, prompts, seed=seed, env_kwargs={"reward_model": judge_reward.fn})
    judge_reward.take()
    return {"judge": float(np.mean(s.proxy)), "gold": float(np.mean(s.gold)),
            "gold_sem": float(np.std(s.gold, ddof=1) / np.sqrt(len(s.gold))),
            "fluency": float(np.mean(gold_fluency(s.prompts, s.completions))), "length": float(np.mean(s.lengths)),
            "proxy_rm": float(np.mean(proxy_rm(s.prompts, s.completions))), "seconds": time.perf_counter() - t,
            "examples": [p + c for p, c in zip(s.prompts[:4], s.completions[:4])]}


def train(args, smol, smol_tok, world_tok, measured: dict) -> dict:
    from agents import PGConfig, train_pg
    from agents.policies.lm import LMPolicy
    from agents.text.evaluation import eval_prompts

    judge = judge_for(measured["chosen"], smol, smol_tok)
    proxy_rm = HFRewardModel(world.proxy_rm_path())
    prompts = eval_prompts(args.eval_prompts)
    out = {"rubric": measured["chosen"], "eval_prompts": len(prompts), "runs": {}}
    plain = JudgeReward(judge, world_tok)
    base = LMPolicy.from_pretrained(world.lm_path())
    out["before"] = evaluate_policy(base, prompts, plain, proxy_rm, args.seed)
    print("before", {k: v for k, v in out["before"].items() if k != "examples"}, flush=True)
    runs = {"judge": plain,
            "judge + length debias": JudgeReward(judge, world_tok, measured["length_slope"], measured["length_mean"])}
    for name, reward in runs.items():
        config = PGConfig(estimator="grpo", group_size=4, prompts_per_iter=args.prompts_per_iter, iterations=args.iterations,
                          lr=args.lr, kl_coef=args.kl_coef, epochs=1, minibatch_rows=0, seed=args.seed, threads=args.threads,
                          checkpoint_every=args.iterations, env_kwargs={"reward_model": reward.fn})
        curve = []

        def log(row, policy, reward=reward, curve=curve):
            keep = ("iteration", "gold", "proxy", "length", "kl", "time_s")
            curve.append({k: row[k] for k in keep} | {"judge": reward.take()})
            if row["iteration"] % 5 == 0:
                print(f"{name} it {row['iteration']:3d} judge {curve[-1]['judge']:+.3f} gold {row['gold']:+.3f} "
                      f"len {row['length']:.1f} kl {row['kl']:.2f} {row['time_s']:.0f}s", flush=True)

        result = train_pg(config, Path(args.runs) / name.replace(" ", "_").replace("+", "plus"), resume=False,
                          progress=False, callback=log)
        after = evaluate_policy(result.policy, prompts, plain, proxy_rm, args.seed)
        print(name, "after", {k: v for k, v in after.items() if k != "examples"}, flush=True)
        out["runs"][name] = {"train_seconds": curve[-1]["time_s"], "curve": curve, "after": after,
                             "config": {"iterations": args.iterations, "prompts_per_iter": args.prompts_per_iter,
                                        "group_size": 4, "lr": args.lr, "kl_coef": args.kl_coef, "seed": args.seed}}
    return out


def write_markdown(res: dict, path: Path) -> None:
    lines = ["# RLAIF with a real judge: SmolLM2-135M-Instruct on the built-in world", "",
             f"`OMP_NUM_THREADS=1 python benchmarks/rlaif_judge.py --threads 1` — {res.get('machine', '')}", ""]
    m = res.get("measure")
    if m:
        lines += [
            f"## Judge quality (held-out: {m['eval_pairs']} gold-distinct pairs of {m['eval_records']} records drawn at "
            f"random, seed {res['seed'] + 1}, of the {m['eval_records_all']} held-out records / {m['eval_pairs_all']} pairs)", "",
            f"Rubric chosen on the selection set ({m['selection_pairs']} gold-distinct pairs of {m['selection_records']} "
            f"**training** records): **{m['chosen']}**.", "",
            "| rubric | selection-set gold agreement | held-out gold agreement | Spearman with gold | score–length r | mean score | s / completion |",
            "|---|---|---|---|---|---|---|"]
        for name in RUBRICS:
            sel, held = m["selection"][name], m["held_out"][f"SmolLM2 pointwise, {name}"]
            mark = "**" if name == m["chosen"] else ""
            lines.append(f"| {mark}{name}{mark} | {sel['gold_accuracy']:.3f} | {mark}{held['gold_accuracy']:.3f}{mark} | "
                         f"{held['gold_spearman']:+.3f} | {held['length_pearson']:+.2f} | {held['score_mean']:+.2f} | "
                         f"{held['s_per_completion']:.3f} |")
        p = m["pairwise"]
        lines += ["", "| scorer, same held-out pairs | gold agreement | score–length r |", "|---|---|---|"]
        for label in ("proxy reward model (built-in)", "built-in LM pointwise, `… i would` → ` highly`/` not`"):
            row = m["held_out"][label]
            lines.append(f"| {label} | {row['gold_accuracy']:.3f} | {row['length_pearson']:+.2f} |")
        chosen = m["held_out"][f"SmolLM2 pointwise, {m['chosen']}"]
        lines += [f"| SmolLM2 pointwise, {m['chosen']} (chosen) | {chosen['gold_accuracy']:.3f} | {chosen['length_pearson']:+.2f} |",
                  f"| SmolLM2 pairwise, both orders averaged | {p['gold_accuracy']:.3f} | — |",
                  f"| SmolLM2 pairwise, one order: better first / worse first | {p['better_first_accuracy']:.3f} / "
                  f"{p['worse_first_accuracy']:.3f} | — |", "",
                  f"Gold's own score–length r on these completions: {chosen['gold_length_pearson']:+.2f}. Pairwise position "
                  f"bias: mean P(first) = {p['mean_p_first']:.2f} (0.5 = none); the two orders agree on {p['order_consistent']:.0%} "
                  f"of pairs; {p['s_per_pair_both_orders']:.2f} s per pair (both orders). Time at 1 thread for all held-out "
                  f"records: about {m['all_records_pointwise_s_estimate'] / 60:.0f} min for the four pointwise rubrics and "
                  f"{p['all_pairs_s_estimate'] / 60:.0f} min pairwise, hence the subset. Length slope of the chosen judge on the "
                  f"selection set: {m['length_slope']:+.4f} per token (mean length {m['length_mean']:.1f} tokens).", ""]
    t = res.get("train")
    if t:
        cfg = next(iter(t["runs"].values()))["config"]
        lines += [f"## GRPO against the judge ({cfg['iterations']} iterations × {cfg['prompts_per_iter']} prompts × "
                  f"{cfg['group_size']}, lr {cfg['lr']}, β {cfg['kl_coef']}, seed {cfg['seed']}; evaluated on {t['eval_prompts']} "
                  "held-out prompts, one sample each)", "",
                  "| policy | judge score | gold sentiment | gold fluency | length (tokens) | proxy RM (normalised) | train s |",
                  "|---|---|---|---|---|---|---|"]
        rows = [("base LM", t["before"], None)] + [(f"GRPO on {n}", r["after"], r["train_seconds"]) for n, r in t["runs"].items()]
        for name, e, secs in rows:
            lines.append(f"| {name} | {e['judge']:+.3f} | {e['gold']:+.3f} ± {e['gold_sem']:.3f} | {e['fluency']:.3f} | "
                         f"{e['length']:.1f} | {e['proxy_rm']:+.2f} | {'—' if secs is None else f'{secs:.0f}'} |")
        lines += ["", "Training batches (means over the first and the last 10 iterations; length in tokens, KL summed "
                  "per completion):", "", "| run | judge | gold | length | KL |", "|---|---|---|---|---|"]
        for name, r in t["runs"].items():
            first, last = r["curve"][:10], r["curve"][-10:]

            def span(key, fmt="+.3f", first=first, last=last):
                return f"{np.mean([c[key] for c in first]):{fmt}} → {np.mean([c[key] for c in last]):{fmt}}"
            lines.append(f"| {name} | {span('judge')} | {span('gold')} | {span('length', '.1f')} | {span('kl', '.2f')} |")
        lines += ["", "Samples (first held-out prompts):", ""]
        for name, e, _ in rows:
            lines += [f"* {name}: " + " / ".join(f"`{x.strip()}`" for x in e["examples"][:3])]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("measure", "train", "all"), default="all")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--selection-records", type=int, default=40, help="training records the rubric is chosen on")
    parser.add_argument("--eval-records", type=int, default=100, help="held-out records drawn at random (of 500)")
    parser.add_argument("--iterations", type=int, default=64)
    parser.add_argument("--prompts-per-iter", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--kl-coef", type=float, default=0.05)
    parser.add_argument("--eval-prompts", type=int, default=200)
    parser.add_argument("--runs", default="runs/rlaif_judge")
    parser.add_argument("--out", default=str(RESULTS / "rlaif_judge.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    res = json.loads(out.read_text()) if out.exists() else {}
    res.update(seed=args.seed, machine=f"2-core CPU, torch {torch.__version__}, {args.threads} torch thread(s), "
                                      f"{time.strftime('%Y-%m-%d')}")
    smol_path = models.model_path("smollm2-135m-instruct")
    smol, smol_tok = load_causal_lm(smol_path), load_tokenizer(smol_path)
    world_tok = load_tokenizer(world.lm_path())
    if args.part in ("measure", "all"):
        res["measure"] = measure(args, smol, smol_tok, world_tok)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=2) + "\n")
    if args.part in ("train", "all"):
        if "measure" not in res:
            raise SystemExit("--part train needs the measure part's results (the chosen rubric); run --part measure first")
        res["train"] = train(args, smol, smol_tok, world_tok, res["measure"])
        out.write_text(json.dumps(res, indent=2) + "\n")
    write_markdown(res, out.with_suffix(".md"))
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
