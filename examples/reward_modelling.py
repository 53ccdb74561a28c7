"""Reward modelling end to end on the built-in world, in about three minutes on a CPU.

Shows: (1) sampling K=4 completions per prompt from the base LM and ranking them with noisy gold labels
(preference data); (2) training a Bradley-Terry reward model on them (checkpointed: rerun and it resumes or
returns the finished model); (3) its held-out accuracy, accuracy against gold and length bias; (4) plugging
it into the env with gold sentiment reported beside it, alone and inside a multi-objective composite.

    python examples/reward_modelling.py
"""

import json

import gymnasium as gym
import torch

import textenv  # noqa: F401  (registers textenv/Sentiment-v1)
from textenv import world
from textenv.rewards import CompositeReward, HFRewardModel, LengthPenalty
from textenv.rm import RewardModelConfig, generate_preferences, label_stats, train_reward_model, write_preferences
from textenv.task import load_prompts
from textenv.world import grammar


def step_text(env, prompt: str, text: str):
    """Reset on ``prompt``, step the tokens of ``text`` and EOS; returns the last reward and info."""
    env.reset(seed=0, options={"prompt": prompt})
    task = env.unwrapped.task
    for token in task.tokenizer(text, add_special_tokens=False)["input_ids"] + [task.eos_token_id]:
        _, reward, terminated, truncated, info = env.step(token)
    return reward, info


def main():
    torch.set_num_threads(1)
    lm = world.lm_path()

    # 1. preference data: 1,500 training prompts from the grammar, 300 held-out prompts of the eval split
    train = generate_preferences(lm, grammar.sample_prompts(1500, seed=7), world.gold_sentiment, k=4, temperature=0.5, seed=0)
    held_out = generate_preferences(lm, load_prompts(world.prompts_path(), split="eval")[:300], world.gold_sentiment, k=4, seed=1)
    write_preferences("runs/example_rm/train.jsonl", train)
    write_preferences("runs/example_rm/eval.jsonl", held_out)
    stats = label_stats(train, temperature=0.5)
    print(f"{stats.pairs} training pairs; labels agree with gold on {stats.agreement:.1%} of non-tied pairs; "
          f"no model can exceed {stats.bayes_accuracy:.3f} accuracy on such labels")

    # 2. the reward model: GPT2ForSequenceClassification on the base LM's trunk
    config = RewardModelConfig(
        train_file="runs/example_rm/train.jsonl", eval_file="runs/example_rm/eval.jsonl",
        output_dir="runs/example_rm/model", base_model=str(world.lm_path()), epochs=3, batch_size=32, lr=1e-3,
    )
    path = train_reward_model(config, gold=world.gold_sentiment)

    # 3. what it learned (all of it in metrics.json; plots in report.png)
    m = json.loads((path / "metrics.json").read_text())
    print(f"held-out accuracy {m['accuracy']:.3f}, against gold {m['gold_accuracy']:.3f}, Spearman with gold "
          f"{m['gold_spearman']:+.2f}, length correlation {m['length_pearson']:+.2f}, trained in {m['train_seconds']} s")

    # 4. the env with this reward model (its stored normalisation applied) and gold beside it
    env = gym.make("textenv/Sentiment-v1", reward_model=str(path), max_new_tokens=8)
    reward, info = step_text(env, "the pasta was", " really delicious .")
    print(f"'the pasta was really delicious .': reward {reward:+.2f}, gold {info['reward_gold']:+.2f}")

    # ... or a multi-objective reward: the RM with a length penalty, plus gold fluency; each term is in info
    composite = CompositeReward(
        {"rm": LengthPenalty(HFRewardModel(path), coef=0.05, free=6), "fluency": world.gold_fluency},
        weights={"rm": 1.0, "fluency": 0.5},
    )
    env = gym.make("textenv/Sentiment-v1", reward_model=composite, max_new_tokens=8)
    reward, info = step_text(env, "the pasta was", " really delicious .")
    print(f"composite {reward:+.2f} = rm {info['reward_rm']:+.2f} + fluency {info['reward_fluency']:+.2f}")


if __name__ == "__main__":
    main()
