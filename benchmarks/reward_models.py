"""Reward models on the built-in world: how good is the learned proxy, and how good is an LLM judge?

1. Trains the proxy reward model again with the built-in recipe (4,000 prompts × K=4 completions ranked by a
   noisy Bradley-Terry draw on gold sentiment) at the given thread count, and times it.
2. Evaluates it on the 500 held-out prompts: accuracy on the noisy labels (against the ceiling the label
   noise allows), accuracy against gold, rank correlation with gold, calibration, length bias.
3. Scores the same held-out pairs with LLM judges on the built-in LM (pointwise rubric as a continuation in
   the reviews' language, the generic English rubric, and the pairwise template averaged over both orders)
   and reports their agreement with gold beside the proxy's on the same pairs.

    OMP_NUM_THREADS=1 python benchmarks/reward_models.py --threads 1

Writes ``benchmarks/results/reward_models.md`` (and prints it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from textenv import world
from textenv.rewards import HFRewardModel, PairwiseJudge, PointwiseJudge
from textenv.rewards.judge import PAIRWISE_TEMPLATE, REVIEW_CONTINUATION, REVIEW_OPTIONS, RUBRIC_TEMPLATE
from textenv.rm import evaluate_reward_model, load_preferences, train_reward_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--judge-records", type=int, default=150, help="held-out records (prompts) the judges score")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "reward_models.md"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    recipe = world.ProxyRecipe()
    proxy_dir = world.build_proxy()
    labels = json.loads((proxy_dir / "labels.json").read_text())
    lm = world.lm_path()

    with tempfile.TemporaryDirectory() as tmp:
        config = recipe.rm_config(proxy_dir, lm, output_dir=tmp, threads=args.threads)
        started = time.perf_counter()
        train_reward_model(config, resume=False, gold=world.gold_sentiment)
        wall = time.perf_counter() - started
        metrics = json.loads((Path(tmp) / "metrics.json").read_text())
        rm = HFRewardModel(tmp, normalize=False)

        held_out = load_preferences(proxy_dir / "preferences-eval.jsonl")
        subset = held_out[: args.judge_records]
        rows = []
        for name, scorer in (
            ("proxy reward model (this run)", rm),
            ("pointwise judge, review continuation `… i would` → ` highly` / ` not`", PointwiseJudge(lm, REVIEW_CONTINUATION, REVIEW_OPTIONS)),
            ("pointwise judge, English rubric → ` Yes` / ` No`", PointwiseJudge(lm, RUBRIC_TEMPLATE)),
        ):
            t = time.perf_counter()
            agree = evaluate_reward_model(scorer, subset, rm.tokenizer)["gold_accuracy"]  # gold from the records
            rows.append((name, agree, time.perf_counter() - t, "—"))
        pairwise = PairwiseJudge(lm, PAIRWISE_TEMPLATE)
        t = time.perf_counter()
        prompts, a, b, gold_diff = [], [], [], []
        for r in subset:
            for w, l in r.pairs:
                if r.gold[w] != r.gold[l]:
                    prompts.append(r.prompt)
                    a.append(r.completions[w])
                    b.append(r.completions[l])
                    gold_diff.append(r.gold[w] - r.gold[l])
        first_ab = pairwise.first_probs(prompts, a, b)
        first_ba = pairwise.first_probs(prompts, b, a)
        p_ab = 0.5 * (first_ab + 1 - first_ba)
        agree = float(np.mean(np.where(p_ab == 0.5, 0.5, (p_ab > 0.5) == (np.array(gold_diff) > 0))))
        one_order = float(np.mean((first_ab > 0.5) == (np.array(gold_diff) > 0)))
        position_bias = float(np.mean(np.concatenate([first_ab, first_ba])))
        name = f"pairwise judge, both orders averaged (one order only: {one_order:.3f}; mean P(first) {position_bias:.2f})"
        rows.append((name, agree, time.perf_counter() - t, f"{position_bias:.2f}"))

    ceiling = labels["eval"]["bayes_accuracy"]
    lines = [
        "# Reward models on the built-in world",
        "",
        f"`OMP_NUM_THREADS=1 python benchmarks/reward_models.py --threads {args.threads}` — 2-core CPU, torch "
        f"{torch.__version__}, {args.threads} torch thread(s), {time.strftime('%Y-%m-%d')}.",
        "",
        "## The proxy reward model",
        "",
        f"Trained on {metrics['train_records']} prompts × K≤{recipe.k} completions of the base LM "
        f"({metrics['train_pairs']} pairs), labels drawn Bradley-Terry at temperature {recipe.label_temperature} on gold "
        f"sentiment (label agreement with gold {labels['train']['agreement']:.3f}; {labels['train']['ties']:.0%} of pairs tie in gold); "
        f"held out: {metrics['pairs']} pairs from 500 other prompts.",
        "",
        "| metric | value |",
        "|---|---|",
        f"| held-out accuracy (noisy labels) | **{metrics['accuracy']:.3f}** (ceiling the label noise allows: {ceiling:.3f}; chance 0.5) |",
        f"| accuracy against gold (pairs with different gold) | **{metrics['gold_accuracy']:.3f}** |",
        f"| Spearman / Pearson with gold | {metrics['gold_spearman']:+.3f} / {metrics['gold_pearson']:+.3f} |",
        f"| calibration error (ECE, 10 bins) | {metrics['ece']:.3f} |",
        f"| correlation of score with length | {metrics['length_pearson']:+.3f} (gold's: {metrics['gold_length_pearson']:+.3f}) |",
        f"| accuracy on length-matched pairs (±1 token) | {metrics['length_matched_accuracy']:.3f} ({metrics['length_matched_pairs']} pairs) |",
        f"| accuracy where chosen is longer / shorter by 2+ tokens | {metrics['longer_chosen_accuracy']:.3f} / {metrics['shorter_chosen_accuracy']:.3f} |",
        f"| training time | {metrics['train_seconds']:.0f} s ({metrics['steps']} steps, batch {recipe.batch_size} prompts; {wall:.0f} s with evaluation and saving) |",
        "",
        f"## Judges against gold (same {len(gold_diff)} held-out pairs with different gold, {len(subset)} prompts)",
        "",
        "| scorer | agreement with gold | seconds |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {agree:.3f} | {seconds:.0f} |" for name, agree, seconds, _ in rows]
    table = "\n".join(lines) + "\n"
    print("\n" + table)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(table)
    print(f"wrote {args.out}")
    (Path(args.out).with_suffix(".json")).write_text(json.dumps(
        {"metrics": metrics, "judges": [dict(zip(("scorer", "agreement", "seconds"), r[:3])) for r in rows],
         "recipe": dataclasses.asdict(recipe)}, indent=2) + "\n")


if __name__ == "__main__":
    main()
