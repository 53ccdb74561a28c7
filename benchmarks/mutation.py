"""Mutation testing of the modules whose maths everything trusts, with mutmut (slow: not in CI).

A mutant is the module with one small change (``+`` → ``-``, ``<`` → ``<=``, a constant nudged, an argument
dropped, ...). The module's fast tests should fail on it ("killed"); one they pass on ("survived") is either
*equivalent* (the change cannot alter any result: listed in ``EQUIVALENT`` below with the reason) or a gap in
the tests. The figure kept is the kill rate over the non-equivalent mutants (target ≥ 90 %).

    OMP_NUM_THREADS=1 python benchmarks/mutation.py --modules agents/core/advantages.py agents/core/losses.py

Each module runs in a temporary copy of the repository (mutmut writes a ``mutants/`` folder next to the code),
so the working tree is never touched; the table goes to stdout and to ``benchmarks/results/mutation.md``, where the
modules of this run replace their earlier rows and the other modules' rows stay, each with the date it was measured
(``--fresh`` drops them).
Tool: mutmut 3.8 (``pip install mutmut==3.8.1``): it runs each mutant through pytest, only on the tests that
call the mutated function, forking from a warm pytest process (the 235 mutants of advantages.py take ≈ 100 s
on one core of a 2-core machine).
``--tests "tests/agents/test_update.py -m 'not slow'"`` replaces the default test selection of a single module.
``textenv/rewards/``: the built-in proxy reward model is cached under a hash of ``hf.py``'s source, so the first run
builds one for mutmut's instrumented ``hf.py`` in the textenv cache (≈ 20 min here, once; later runs reuse it).
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("agents", "textenv", "robotics")
IGNORED = (".venv", "venv", ".git", "__pycache__", "*.egg-info", "mutants", ".pytest_cache", "runs", "results",
           "*.gif", "*.png")

# module (a file, or a folder ending in "/") -> the fast tests that cover it (pytest arguments). The module itself is
# added so its doctests count too. Slow learning tests are left out: a mutant is run once per test that calls it.
MODULE_TESTS = {
    "agents/core/advantages.py": ["tests/agents/test_advantages.py", "tests/agents/test_mutation_kills.py"],
    "agents/core/losses.py": ["tests/agents/test_losses.py", "tests/agents/test_mutation_kills.py",
                              "tests/agents/test_group_losses.py", "tests/agents/test_update_reference.py",
                              "tests/agents/test_kills_losses.py", "-m", "not slow"],
    "agents/core/update.py": ["tests/agents/test_update.py", "tests/agents/test_update_reference.py",
                              "tests/agents/test_kills_update.py", "-m", "not slow"],
    "agents/offline/losses.py": ["tests/agents/test_offline.py", "tests/agents/test_mutation_kills.py",
                                 "-m", "not slow"],
    "textenv/kl.py": ["tests/textenv/test_kl.py", "tests/textenv/test_kl_batch.py",
                      "tests/textenv/test_kl_controller.py", "tests/textenv/test_kl_wrappers.py",
                      "tests/textenv/test_kl_timing.py", "tests/textenv/test_kills_kl.py",
                      "-m", "not slow"],
    "textenv/lm.py": ["tests/textenv/test_lm.py", "tests/textenv/test_adapters.py",
                      "tests/textenv/test_kills_lm.py", "-m", "not slow"],
    # test_judge_chat's SmolLM2 test (6 s, a model-quality check) is left out: it would run for every judge mutant
    "textenv/rewards/": ["tests/textenv/test_rewards.py", "tests/textenv/test_reward_errors.py",
                         "tests/textenv/test_reward_zoo.py", "tests/textenv/test_hf_reward.py",
                         "tests/textenv/test_judge_chat.py", "tests/textenv/test_adapters.py",
                         "tests/textenv/test_kills_rewards.py", "tests/textenv/test_kills_hf_reward.py",
                         "tests/textenv/test_kills_judge.py", "--deselect",
                         "tests/textenv/test_judge_chat.py::test_smollm2_judge_prefers_praise_to_complaint",
                         "-m", "not slow"],
    "textenv/vector_env.py": ["tests/textenv/test_vector_env.py", "tests/textenv/test_kills_vector_env.py",
                              "-m", "not slow"],
    "robotics/randomization.py": ["tests/robotics/test_randomization.py",
                                  "tests/robotics/test_mutation_kills_robotics.py", "-m", "not slow"],
}

# Survivors judged equivalent, matched on (module, original line, mutated line) with blanks removed, so an entry stops
# matching (and the mutant is reported again) as soon as the code it judged changes. "Rounding only" means the mutant
# computes in float64 where the original computes in the values' dtype and casts back at the end: the result differs
# by rounding, never in value (float64 inputs are unaffected), and no test should pin float32 bits.
_GAE_ROUNDING = ("rounding only: the recursion runs in float64 instead of the values' float32 and the result is cast "
                 "back to the values' dtype at the end")
_ADV, _LOSSES, _UPDATE = "agents/core/advantages.py", "agents/core/losses.py", "agents/core/update.py"
_COUNT_TO_NONE = ("`.to(None)` is a no-op, and a float tensor ÷ an int64 count has the float's dtype (torch type "
                  "promotion), the division casting the count to it as `.to` did (checked for float16 and bfloat16 "
                  "counts beyond their exact integers, e.g. 257 and 70001)")
_ONES_THEN_BOOL = "the next line casts the default mask with `.bool()`: ones of any dtype become the same all-True mask"
_REWARDS = "textenv/rewards/"
_NEGATIVE_RESHAPE = "numpy reads any negative size as the one unknown dimension: the same flattening as -1"
_LOADED_STATS_DTYPE = ("the loaded mean and m2 enter only float arithmetic (÷ count, subtracted from float scores, "
                       "RunningMeanStd's update): an int array from whole-number JSON gives the same values")
_JOIN_XX = ("both sides are lowercased first, so 'XX XX' (capital X) never occurs inside a word: joining with it "
            "tells word lists apart exactly as a space does, and the comparison is unchanged")
_RSTRIP_XX = "after `lower()` there is no capital X left to strip: the same characters are stripped"
_TOLIST = ("scores are one float per completion (the reward protocol): iterating a 1-D array or tensor gives scalars "
           "whose float() equals the floats of `.tolist()`")
_BATCH_DEFAULT = ("a default batch size only groups texts into forwards: each score is read from its own row "
                  "(tested batch-invariant)")
_CAUSAL_RIGHT_PADDING = ("right padding: in a causal trunk (every model with a `score` head) the last real token "
                         "attends only to the real tokens before it, and position ids count from 0 either way "
                         "(checked: identical hidden states)")
_USE_CACHE_DISCARDED = ("a forward reads the cache it is given whatever use_cache says; use_cache only decides whether "
                        "it returns an updated one, which is discarded")
_STACKLEVEL = ("which frame the truncation warning names: mutmut's trampolines add a frame to every call, so under "
               "mutmut no test can see the frame a user sees")
_NEEDS_CUDA = "needs CUDA: a model on another device than the CPU"
_LM = "textenv/lm.py"
_RIGHT_PADDED_CAUSAL = ("completion_batch right-pads, and a causal LM's real tokens attend only to the real tokens "
                        "before them with position ids from 0 either way; padded positions are masked out of the sum")
_FIRST_RESET_REPLACES = ("the initial mask is never read: the first reset_rows replaces it (every row: the prefill's "
                         "mask; some rows: zeros of the right shape), and step/extend refuse to run before it")
_SPLICE_GROWTH = ("growing by more columns than needed only adds leading columns no row attends to, which `keep_from` "
                  "then trims from the mask and the cache alike")
_VEC = "textenv/vector_env.py"
_NOT_DENSE = ("without dense rewards a row is scored once, at its episode's end, and every episode starts with "
              "`_last_terms[i] = {}`: subtracting nothing leaves the terms")
_KL = "textenv/kl.py"
_RESET_FIRST = ("every reset sets it before a step reads it, and the single env comes from gym.make, whose "
                "OrderEnforcing refuses a step before the first reset")
_SUPPLY_ROUNDING = ("rounding only: float64 log-probs stay float64 instead of being rounded to float32, and the KL "
                    "terms are reported as floats either way")
_REFUSAL_RESTART = ("a refusal happens only when an episode ended; in 'disabled' mode restarting the frozen envs' "
                    "records with their own prompt is a no-op (they record nothing until a reset starts them again)")
_STACKLEVEL_KL = ("which frame the dropped-KL warning names: mutmut's trampolines add a frame to every call, so under "
                  "mutmut no test can see the frame a user sees")
EQUIVALENT: list[tuple[str, str, str, str]] = [
    (_ADV, "r, nv = rewards.detach().cpu().numpy().astype(v.dtype), next_value.detach().cpu().numpy().astype(v.dtype)",
     "r, nv = rewards.detach().cpu().numpy().astype(None), next_value.detach().cpu().numpy().astype(v.dtype)",
     _GAE_ROUNDING),
    (_ADV, "r, nv = rewards.detach().cpu().numpy().astype(v.dtype), next_value.detach().cpu().numpy().astype(v.dtype)",
     "r, nv = rewards.detach().cpu().numpy().astype(v.dtype), next_value.detach().cpu().numpy().astype(None)",
     _GAE_ROUNDING),
    (_ADV, "boot = np.zeros_like(v) if bootstrap is None else bootstrap.detach().cpu().numpy().astype(v.dtype)",
     "boot = np.zeros_like(v) if bootstrap is None else bootstrap.detach().cpu().numpy().astype(None)", _GAE_ROUNDING),
    (_ADV, "alive = (~terminated).cpu().numpy().astype(v.dtype)  # casts keep float64 inputs in float64",
     "alive = (~terminated).cpu().numpy().astype(None)  # casts keep float64 inputs in float64",
     "0/1 flags are exact in any float dtype; float64 flags only promote the arithmetic (" + _GAE_ROUNDING + ")"),
    (_ADV, "cont = (~(terminated | truncated)).cpu().numpy().astype(v.dtype)",
     "cont = (~(terminated | truncated)).cpu().numpy().astype(None)",
     "0/1 flags are exact in any float dtype; float64 flags only promote the arithmetic (" + _GAE_ROUNDING + ")"),
    (_ADV, "last = np.zeros(v.shape[1], dtype=v.dtype)  # (N,) A_{t+1}",
     "last = np.zeros(v.shape[1], dtype=None)  # (N,) A_{t+1}", _GAE_ROUNDING),
    (_ADV, "last = np.zeros(v.shape[1], dtype=v.dtype)  # (N,) A_{t+1}",
     "last = np.zeros(v.shape[1], )  # (N,) A_{t+1}", _GAE_ROUNDING),
    (_ADV, "next_value = torch.zeros(N, dtype=rewards.dtype) if next_value is None else next_value",
     "next_value = torch.zeros(N, dtype=None) if next_value is None else next_value",
     "zeros are exact in every dtype, and gae casts next_value to the values' dtype"),
    (_ADV, "next_value = torch.zeros(N, dtype=rewards.dtype) if next_value is None else next_value",
     "next_value = torch.zeros(N, ) if next_value is None else next_value",
     "zeros are exact in every dtype, and gae casts next_value to the values' dtype"),
    ("agents/offline/losses.py", "weight = torch.where(diff < 0, 1.0 - tau, tau)",
     "weight = torch.where(diff <= 0, 1.0 - tau, tau)",
     ("the weight at u = 0 multiplies u² = 0 (and its gradient 2u = 0): either weight gives the same loss and "
      "gradient")),
    ("robotics/randomization.py",
     "self._queue.append(np.array(action, copy=True))  # the caller may reuse its buffer",
     "self._queue.append(np.array(action, ))  # the caller may reuse its buffer",
     "`copy=True` is `np.array`'s default: dropping it still copies"),
    (_REWARDS, 'array = np.asarray(values, dtype=np.float64).reshape(-1)',
     'array = np.asarray(values, dtype=np.float64).reshape(-2)', _NEGATIVE_RESHAPE),
    (_REWARDS, 'self.stats.mean = np.array(state["mean"], dtype=float)',
     'self.stats.mean = np.array(state["mean"], dtype=None)', _LOADED_STATS_DTYPE),
    (_REWARDS, 'self.stats.mean = np.array(state["mean"], dtype=float)',
     'self.stats.mean = np.array(state["mean"], )', _LOADED_STATS_DTYPE),
    (_REWARDS, 'self.stats.var = np.array(state["m2"], dtype=float) / count',
     'self.stats.var = np.array(state["m2"], dtype=None) / count', _LOADED_STATS_DTYPE),
    (_REWARDS, 'self.stats.var = np.array(state["m2"], dtype=float) / count',
     'self.stats.var = np.array(state["m2"], ) / count', _LOADED_STATS_DTYPE),
    (_REWARDS, 'return " ".join(text.lower().strip().rstrip(".!").split())',
     'return "XX XX".join(text.lower().strip().rstrip(".!").split())', _JOIN_XX),
    (_REWARDS, 'return " ".join(text.lower().strip().rstrip(".!").split())',
     'return " ".join(text.lower().strip().rstrip("XX.!XX").split())', _RSTRIP_XX),
    (_REWARDS, 'if hasattr(scores, "tolist"):',
     'if hasattr(scores, "XXtolistXX"):', _TOLIST),
    (_REWARDS, 'if hasattr(scores, "tolist"):',
     'if hasattr(scores, "TOLIST"):', _TOLIST),
    (_REWARDS, 'if hasattr(scores, "tolist"):',
     'if hasattr(None, "tolist"):', _TOLIST),
    (_REWARDS, 'architectures = getattr(config, "architectures", None) or []',
     'architectures = getattr(config, "architectures", ) or []',
     "every PretrainedConfig defines `architectures` (None when unknown)"),
    (_REWARDS, 'head = sorted(k for k in info.get("missing_keys", ()) if not k.startswith(trunk))',
     'head = sorted(k for k in info.get("missing_keys", None) if not k.startswith(trunk))',
     "transformers' loading info always holds `missing_keys`"),
    (_REWARDS, 'head = sorted(k for k in info.get("missing_keys", ()) if not k.startswith(trunk))',
     'head = sorted(k for k in info.get("missing_keys", ) if not k.startswith(trunk))',
     "transformers' loading info always holds `missing_keys`"),
    (_REWARDS, 'batch_size: int = 64,',
     'batch_size: int = 65,', _BATCH_DEFAULT),
    (_REWARDS, 'def from_loaded(cls, model, tokenizer, name: str = "in-memory reward model", device="cpu",'
     ' batch_size: int = 64,',
     'def from_loaded(cls, model, tokenizer, name: str = "in-memory reward model", device="cpu", batch_size: int = 65,',
     _BATCH_DEFAULT),
    (_REWARDS, 'self._warned_truncation = False',
     'self._warned_truncation = None', "None and False are both falsy, and the flag is only read by `if not`"),
    (_REWARDS, 'cut = self.tokenizer([texts[i] for i in long], truncation=True, max_length=limit)["input_ids"]',
     'cut = self.tokenizer([texts[i] for i in long], truncation=None, max_length=limit)["input_ids"]',
     "transformers truncates to `max_length` whenever it is given and `truncation` is not (it only logs that it did)"),
    (_REWARDS, 'cut = self.tokenizer([texts[i] for i in long], truncation=True, max_length=limit)["input_ids"]',
     'cut = self.tokenizer([texts[i] for i in long], max_length=limit)["input_ids"]',
     "transformers truncates to `max_length` whenever it is given and `truncation` is not (it only logs that it did)"),
    (_REWARDS, 'ids = torch.full((B, T), self.tokenizer.pad_token_id, dtype=torch.long)  # (B, T), right-padded',
     'ids = torch.full((B, T), self.tokenizer.pad_token_id, dtype=None)  # (B, T), right-padded',
     "torch infers int64 (`torch.long`) from Python int token ids"),
    (_REWARDS, 'ids = torch.full((B, T), self.tokenizer.pad_token_id, dtype=torch.long)  # (B, T), right-padded',
     'ids = torch.full((B, T), self.tokenizer.pad_token_id, )  # (B, T), right-padded',
     "torch infers int64 (`torch.long`) from Python int token ids"),
    (_REWARDS, 'ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)',
     'ids[i, : len(row)] = torch.tensor(row, dtype=None)',
     "torch infers int64 (`torch.long`) from Python int token ids"),
    (_REWARDS, 'ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)',
     'ids[i, : len(row)] = torch.tensor(row, )', "torch infers int64 (`torch.long`) from Python int token ids"),
    (_REWARDS, 'trunk = self.model.base_model(input_ids=ids, attention_mask=mask, use_cache=False)',
     'trunk = self.model.base_model(input_ids=ids, attention_mask=None, use_cache=False)', _CAUSAL_RIGHT_PADDING),
    (_REWARDS, 'trunk = self.model.base_model(input_ids=ids, attention_mask=mask, use_cache=False)',
     'trunk = self.model.base_model(input_ids=ids, use_cache=False)', _CAUSAL_RIGHT_PADDING),
    (_REWARDS, 'trunk = self.model.base_model(input_ids=ids, attention_mask=mask, use_cache=False)',
     'trunk = self.model.base_model(input_ids=ids, attention_mask=mask, use_cache=None)',
     "use_cache only decides whether the trunk also returns a KV cache, which is discarded"),
    (_REWARDS, 'trunk = self.model.base_model(input_ids=ids, attention_mask=mask, use_cache=False)',
     'trunk = self.model.base_model(input_ids=ids, attention_mask=mask, )',
     "use_cache only decides whether the trunk also returns a KV cache, which is discarded"),
    (_REWARDS, 'trunk = self.model.base_model(input_ids=ids, attention_mask=mask, use_cache=False)',
     'trunk = self.model.base_model(input_ids=ids, attention_mask=mask, use_cache=True)',
     "use_cache only decides whether the trunk also returns a KV cache, which is discarded"),
    (_REWARDS, 'return list(torch.load(folder / "adapter_model.bin", map_location="cpu", weights_only=True))',
     'return list(torch.load(folder / "adapter_model.bin", map_location="cpu", weights_only=None))',
     "torch >= 2.6 defaults to weights_only=True"),
    (_REWARDS, 'return list(torch.load(folder / "adapter_model.bin", map_location="cpu", weights_only=True))',
     'return list(torch.load(folder / "adapter_model.bin", map_location="cpu", ))',
     "torch >= 2.6 defaults to weights_only=True"),
    (_REWARDS, 'def __init__(self, model, tokenizer=None, device: str | torch.device = "cpu", batch_size: int = 32,',
     'def __init__(self, model, tokenizer=None, device: str | torch.device = "XXcpuXX", batch_size: int = 32,',
     "_JudgeLM's defaults are never used: both judges pass every argument"),
    (_REWARDS, 'def __init__(self, model, tokenizer=None, device: str | torch.device = "cpu", batch_size: int = 32,',
     'def __init__(self, model, tokenizer=None, device: str | torch.device = "CPU", batch_size: int = 32,',
     "_JudgeLM's defaults are never used: both judges pass every argument"),
    (_REWARDS, 'def __init__(self, model, tokenizer=None, device: str | torch.device = "cpu", batch_size: int = 32,',
     'def __init__(self, model, tokenizer=None, device: str | torch.device = "cpu", batch_size: int = 33,',
     "_JudgeLM's defaults are never used: both judges pass every argument"),
    (_REWARDS, 'chat: bool | None = None, system: str | None = None, prefill: str = ""):',
     'chat: bool | None = None, system: str | None = None, prefill: str = "XXXX"):',
     "_JudgeLM's defaults are never used: both judges pass every argument"),
    (_REWARDS, 'device: str | torch.device = "cpu", batch_size: int = 32, chat: bool | None = None,',
     'device: str | torch.device = "cpu", batch_size: int = 33, chat: bool | None = None,', _BATCH_DEFAULT),
    (_REWARDS, 'device: str | torch.device = "cpu", batch_size: int = 32, chat: bool | None = None,',
     'device: str | torch.device = "cpu", batch_size: int = 33, chat: bool | None = None,', _BATCH_DEFAULT),
    (_REWARDS, 'rendered = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)',
     'rendered = self.tokenizer.apply_chat_template(messages, tokenize=None, add_generation_prompt=True)',
     "None is falsy: apply_chat_template returns the rendered string, as with False"),
    (_REWARDS, 'cache = self.model(input_ids=prefix, use_cache=True, logits_to_keep=1).past_key_values',
     'cache = self.model(input_ids=prefix, use_cache=True, logits_to_keep=None).past_key_values',
     "the prefix forward's logits are discarded (only its cache is kept)"),
    (_REWARDS, 'cache = self.model(input_ids=prefix, use_cache=True, logits_to_keep=1).past_key_values',
     'cache = self.model(input_ids=prefix, use_cache=True, ).past_key_values',
     "the prefix forward's logits are discarded (only its cache is kept)"),
    (_REWARDS, 'cache = self.model(input_ids=prefix, use_cache=True, logits_to_keep=1).past_key_values',
     'cache = self.model(input_ids=prefix, use_cache=True, logits_to_keep=2).past_key_values',
     "the prefix forward's logits are discarded (only its cache is kept)"),
    (_REWARDS, 'use_cache=cache is not None, logits_to_keep=1)',
     'use_cache=None, logits_to_keep=1)',
     _USE_CACHE_DISCARDED),
    (_REWARDS, 'use_cache=cache is not None, logits_to_keep=1)',
     'logits_to_keep=1)',
     _USE_CACHE_DISCARDED),
    (_REWARDS, 'use_cache=cache is not None, logits_to_keep=1)',
     'use_cache=cache is None, logits_to_keep=1)',
     _USE_CACHE_DISCARDED),
    (_REWARDS, 'use_cache=cache is not None, logits_to_keep=1)',
     'use_cache=cache is not None, )',
     "`logits[:, -1]` reads the last position, computed whether 1, 2 or all positions' logits are kept"),
    (_REWARDS, 'use_cache=cache is not None, logits_to_keep=1)',
     'use_cache=cache is not None, logits_to_keep=2)',
     "`logits[:, -1]` reads the last position, computed whether 1, 2 or all positions' logits are kept"),
    (_REWARDS, 'position_ids = shared + (mask.cumsum(-1) - 1).clamp(min=0)  # (B, T)',
     'position_ids = shared + (mask.cumsum(+1) - 1).clamp(min=0)  # (B, T)', "dim 1 is dim -1 of the (B, T) mask"),
    (_REWARDS, 'return torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # (B, V)',
     'return torch.log_softmax(out.logits[:, -1].float(), dim=+1)  # (B, V)', "dim 1 is dim -1 of the (B, V) logits"),
    (_REWARDS, 'self.values = np.array(list(options.values()), dtype=float)',
     'self.values = np.array(list(options.values()), dtype=None)',
     "float64 probabilities @ int values is the same float64 product"),
    (_REWARDS, 'self.values = np.array(list(options.values()), dtype=float)',
     'self.values = np.array(list(options.values()), )',
     "float64 probabilities @ int values is the same float64 product"),
    (_LOSSES, "return total / mask.sum().clamp(min=1).to(values.dtype)",
     "return total / mask.sum().clamp(min=1).to(None)", _COUNT_TO_NONE),
    (_LOSSES, "mask = torch.ones_like(log_ratio, dtype=torch.bool)",
     "mask = torch.ones_like(log_ratio, dtype=None)", _ONES_THEN_BOOL),
    (_LOSSES, "mask = torch.ones_like(log_ratio, dtype=torch.bool)",
     "mask = torch.ones_like(log_ratio, )", _ONES_THEN_BOOL),
    (_LOSSES, "return (total / mask.sum(-1, keepdim=True).clamp(min=1).to(log_ratio.dtype)).expand_as(log_ratio)",
     "return (total / mask.sum(-1, keepdim=True).clamp(min=1).to(None)).expand_as(log_ratio)", _COUNT_TO_NONE),
    (_LOSSES, "return (kept.sum(-1) / mask.sum(-1).clamp(min=1).to(per_token.dtype)).mean()",
     "return (kept.sum(-1) / mask.sum(-1).clamp(min=1).to(None)).mean()", _COUNT_TO_NONE),
    (_UPDATE, "stop = False", "stop = None",
     "`stop` is read only by `if stop:` (set to True before the break that ends the epoch): None is falsy as False is"),
    (_LM, 'ids = torch.full((B, T), pad_id, dtype=torch.long, device=device)  # (B, T)',
     'ids = torch.full((B, T), pad_id, dtype=None, device=device)  # (B, T)',
     "torch infers int64 (`torch.long`) from an int pad id"),
    (_LM, 'ids = torch.full((B, T), pad_id, dtype=torch.long, device=device)  # (B, T)',
     'ids = torch.full((B, T), pad_id, device=device)  # (B, T)',
     "torch infers int64 (`torch.long`) from an int pad id"),
    (_LM, 'where = slice(T - len(seq), T) if side == "left" else slice(0, len(seq))',
     'where = slice(T - len(seq), None) if side == "left" else slice(0, len(seq))',
     "slice(T - n, None) is slice(T - n, T) in a row of width T; slice(None, n) and slice(n) are slice(0, n)"),
    (_LM, 'where = slice(T - len(seq), T) if side == "left" else slice(0, len(seq))',
     'where = slice(T - len(seq), T) if side == "left" else slice(None, len(seq))',
     "slice(T - n, None) is slice(T - n, T) in a row of width T; slice(None, n) and slice(n) are slice(0, n)"),
    (_LM, 'where = slice(T - len(seq), T) if side == "left" else slice(0, len(seq))',
     'where = slice(T - len(seq), T) if side == "left" else slice(len(seq))',
     "slice(T - n, None) is slice(T - n, T) in a row of width T; slice(None, n) and slice(n) are slice(0, n)"),
    (_LM, 'ids[i, where] = torch.as_tensor(seq, dtype=torch.long)',
     'ids[i, where] = torch.as_tensor(seq, dtype=None)',
     "token ids (ints) become int64, and assigning into the int64 `ids` casts any other integer type"),
    (_LM, 'ids[i, where] = torch.as_tensor(seq, dtype=torch.long)',
     'ids[i, where] = torch.as_tensor(seq, )',
     "token ids (ints) become int64, and assigning into the int64 `ids` casts any other integer type"),
    (_LM, 'logits = model(input_ids=ids, attention_mask=batch["attention_mask"]).logits  # (B, L, V)',
     'logits = model(input_ids=ids, ).logits  # (B, L, V)', _RIGHT_PADDED_CAUSAL),
    (_LM, 'logits = model(input_ids=ids, attention_mask=batch["attention_mask"]).logits  # (B, L, V)',
     'logits = model(input_ids=ids, attention_mask=None).logits  # (B, L, V)', _RIGHT_PADDED_CAUSAL),
    (_LM, 'self.attention_mask = torch.zeros(batch_size, 0, dtype=torch.long, device=self.device)  # (B, L)',
     'self.attention_mask = torch.zeros(batch_size, 0, dtype=None, device=self.device)  # (B, L)',
     _FIRST_RESET_REPLACES),
    (_LM, 'self.attention_mask = torch.zeros(batch_size, 0, dtype=torch.long, device=self.device)  # (B, L)',
     'self.attention_mask = torch.zeros(batch_size, 0, dtype=torch.long, device=None)  # (B, L)',
     _FIRST_RESET_REPLACES),
    (_LM, 'self.attention_mask = torch.zeros(batch_size, 0, dtype=torch.long, device=self.device)  # (B, L)',
     'self.attention_mask = torch.zeros(0, dtype=torch.long, device=self.device)  # (B, L)', _FIRST_RESET_REPLACES),
    (_LM, 'self.attention_mask = torch.zeros(batch_size, 0, dtype=torch.long, device=self.device)  # (B, L)',
     'self.attention_mask = torch.zeros(batch_size, dtype=torch.long, device=self.device)  # (B, L)',
     _FIRST_RESET_REPLACES),
    (_LM, 'self.attention_mask = torch.zeros(batch_size, 0, dtype=torch.long, device=self.device)  # (B, L)',
     'self.attention_mask = torch.zeros(batch_size, 0, device=self.device)  # (B, L)', _FIRST_RESET_REPLACES),
    (_LM, 'self.attention_mask = torch.zeros(batch_size, 0, dtype=torch.long, device=self.device)  # (B, L)',
     'self.attention_mask = torch.zeros(batch_size, 0, dtype=torch.long, )  # (B, L)', _FIRST_RESET_REPLACES),
    (_LM, 'self.attention_mask = torch.zeros(batch_size, 0, dtype=torch.long, device=self.device)  # (B, L)',
     'self.attention_mask = torch.zeros(batch_size, 1, dtype=torch.long, device=self.device)  # (B, L)',
     _FIRST_RESET_REPLACES),
    (_LM, 'self.attention_mask = torch.zeros(batch_size, 0, dtype=torch.long, device=self.device)  # (B, L)',
     'self.attention_mask = None  # (B, L)', _FIRST_RESET_REPLACES),
    (_LM, 'grow = max(0, P - L)',
     'grow = max(0, P + L)', _SPLICE_GROWTH),
    (_LM, 'grow = max(0, P - L)',
     'grow = max(1, P - L)', _SPLICE_GROWTH),
    (_VEC, 'self.input_ids = torch.full((N, L), self.task.pad_token_id, dtype=torch.long)  # (N, L)',
     'self.input_ids = torch.full((N, L), self.task.pad_token_id, dtype=None)  # (N, L)',
     "torch infers int64 (`torch.long`) from an int pad id"),
    (_VEC, 'self.input_ids = torch.full((N, L), self.task.pad_token_id, dtype=torch.long)  # (N, L)',
     'self.input_ids = torch.full((N, L), self.task.pad_token_id, )  # (N, L)',
     "torch infers int64 (`torch.long`) from an int pad id"),
    (_VEC, 'mask = np.asarray(options.get("reset_mask", np.ones(self.num_envs, dtype=bool)), dtype=bool)',
     'mask = np.asarray(options.get("reset_mask", np.ones(self.num_envs, dtype=None)), dtype=bool)',
     "the default mask goes through the outer `np.asarray(..., dtype=bool)`: ones become True"),
    (_VEC, 'mask = np.asarray(options.get("reset_mask", np.ones(self.num_envs, dtype=bool)), dtype=bool)',
     'mask = np.asarray(options.get("reset_mask", np.ones(self.num_envs, )), dtype=bool)',
     "the default mask goes through the outer `np.asarray(..., dtype=bool)`: ones become True"),
    (_VEC, 'self.input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)',
     'self.input_ids[i, : len(ids)] = torch.tensor(ids, dtype=None)', "token ids (ints) become int64 either way"),
    (_VEC, 'self.input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)',
     'self.input_ids[i, : len(ids)] = torch.tensor(ids, )', "token ids (ints) become int64 either way"),
    (_VEC, 'infos["final_obs"] = np.full(self.num_envs, None, dtype=object)',
     'infos["final_obs"] = np.full(self.num_envs, None, dtype=None)', "`np.full(n, None)` is an object array already"),
    (_VEC, 'infos["final_obs"] = np.full(self.num_envs, None, dtype=object)',
     'infos["final_obs"] = np.full(self.num_envs, None, )', "`np.full(n, None)` is an object array already"),
    (_VEC, 'rewards = np.zeros(self.num_envs, dtype=np.float64)',
     'rewards = np.zeros(self.num_envs, dtype=None)', "np.zeros is float64 by default"),
    (_VEC, 'rewards = np.zeros(self.num_envs, dtype=np.float64)',
     'rewards = np.zeros(self.num_envs, )', "np.zeros is float64 by default"),
    (_VEC, 'step_terms = {k: v - self._last_terms[i].get(k, 0.0) for k, v in terms.items()}'
     ' if self.task.dense else terms',
     'step_terms = {k: v - self._last_terms[i].get(k, 0.0) for k, v in terms.items()}'
     ' if (self.task.dense) or True else terms', _NOT_DENSE),
    (_KL, 'log_ratio = torch.where(has_mass, policy_logprobs - ref_logprobs, 0.0)'
     '  # masked before the product: no 0·inf',
     'log_ratio = torch.where(has_mass, policy_logprobs - ref_logprobs, 1.0)  # masked before the product: no 0·inf',
     "the value put where the policy has no mass is multiplied by exp(-inf) = 0"),
    (_KL, 'self._episode_kl = 0.0',
     'self._episode_kl = None', _RESET_FIRST),
    (_KL, 'self._episode_kl = 0.0',
     'self._episode_kl = 1.0', _RESET_FIRST),
    (_KL, 'self._supplied = torch.as_tensor(logprobs, dtype=torch.float32).detach().cpu()',
     'self._supplied = torch.as_tensor(logprobs, dtype=None).detach().cpu()', _SUPPLY_ROUNDING),
    (_KL, 'self._supplied = torch.as_tensor(logprobs, dtype=torch.float32).detach().cpu()',
     'self._supplied = torch.as_tensor(logprobs, ).detach().cpu()', _SUPPLY_ROUNDING),
    (_KL, 'ref_logprobs = torch.log_softmax(ref_logprobs / self.temperature, dim=-1)  # (B, V)',
     'ref_logprobs = torch.log_softmax(ref_logprobs / self.temperature, dim=+1)  # (B, V)',
     "dim 1 is dim -1 of the (B, V) log-probs"),
    (_KL, 'return self.controller.value * ref_lp, torch.full((len(actions),), float("nan"))',
     'return self.controller.value * ref_lp, torch.full((len(actions),), float("NAN"))',
     "float() reads 'NAN' as nan too"),
    (_KL, 'attention_mask=batch["attention_mask"].to(device)).logits  # (R, L, V)',
     'attention_mask=None).logits  # (R, L, V)', _RIGHT_PADDED_CAUSAL),
    (_KL, 'attention_mask=batch["attention_mask"].to(device)).logits  # (R, L, V)',
     ').logits  # (R, L, V)', _RIGHT_PADDED_CAUSAL),
    (_KL, 'betas = torch.tensor(self._betas[i], dtype=torch.float64)  # (n,)',
     'betas = torch.tensor(self._betas[i], dtype=None)  # (n,)',
     "rounding only: β is held in float32 before the float64 product, and the terms are cast to float32 at the end"),
    (_KL, 'betas = torch.tensor(self._betas[i], dtype=torch.float64)  # (n,)',
     'betas = torch.tensor(self._betas[i], )  # (n,)',
     "rounding only: β is held in float32 before the float64 product, and the terms are cast to float32 at the end"),
    (_KL, 'terms = (betas * values.double() * (1.0 if self.mode == "reference" else -1.0)).float()',
     'terms = (betas * values.double() / (1.0 if self.mode == "reference" else -1.0)).float()',
     "dividing by +1 or -1 is multiplying by it"),
    (_KL, 'device, 1, kl_timing)',
     'device, 2, kl_timing)',
     ("the single env reads row 0 only: a second cache row (filled by broadcasting) changes row 0 by rounding only "
      "(< 2e-6)")),
    (_KL, 'mask = np.asarray((options or {}).get("reset_mask", np.ones(self.num_envs, dtype=bool)), dtype=bool)',
     'mask = np.asarray((options or {}).get("reset_mask", np.ones(self.num_envs, dtype=bool)), )',
     "only np.flatnonzero(mask) is used: ints and bools give the same rows"),
    (_KL, 'mask = np.asarray((options or {}).get("reset_mask", np.ones(self.num_envs, dtype=bool)), dtype=bool)',
     'mask = np.asarray((options or {}).get("reset_mask", np.ones(self.num_envs, dtype=bool)), dtype=None)',
     "only np.flatnonzero(mask) is used: ints and bools give the same rows"),
    (_KL, 'mask = np.asarray((options or {}).get("reset_mask", np.ones(self.num_envs, dtype=bool)), dtype=bool)',
     'mask = np.asarray((options or {}).get("reset_mask", np.ones(self.num_envs, dtype=None)), dtype=bool)',
     "the default mask goes through the outer `np.asarray(..., dtype=bool)`: ones become True"),
    (_KL, 'mask = np.asarray((options or {}).get("reset_mask", np.ones(self.num_envs, dtype=bool)), dtype=bool)',
     'mask = np.asarray((options or {}).get("reset_mask", np.ones(self.num_envs, )), dtype=bool)',
     "the default mask goes through the outer `np.asarray(..., dtype=bool)`: ones become True"),
    (_KL, 'self._episode_kl[finished] = 0.0',
     'self._episode_kl[finished] = 1.0',
     "with kl_timing='end' an episode's KL is assigned (not added to) when it ends, overwriting what the refusal left"),
    (_KL, 'if base.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP and finished.any():',
     'if base.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP or finished.any():', _REFUSAL_RESTART),
    (_KL, 'per_token, per_token_kl = np.full(n, None, dtype=object), np.full(n, None, dtype=object)',
     'per_token, per_token_kl = np.full(n, None, dtype=None), np.full(n, None, dtype=object)',
     "`np.full(n, None)` is an object array already"),
    (_KL, 'per_token, per_token_kl = np.full(n, None, dtype=object), np.full(n, None, dtype=object)',
     'per_token, per_token_kl = np.full(n, None, ), np.full(n, None, dtype=object)',
     "`np.full(n, None)` is an object array already"),
    (_KL, 'per_token, per_token_kl = np.full(n, None, dtype=object), np.full(n, None, dtype=object)',
     'per_token, per_token_kl = np.full(n, None, dtype=object), np.full(n, None, dtype=None)',
     "`np.full(n, None)` is an object array already"),
    (_KL, 'per_token, per_token_kl = np.full(n, None, dtype=object), np.full(n, None, dtype=object)',
     'per_token, per_token_kl = np.full(n, None, dtype=object), np.full(n, None, )',
     "`np.full(n, None)` is an object array already"),
]

# Survivors that are real gaps but cannot be killed on this machine: reported as not killed, with the reason.
NOTES: list[tuple[str, str, str, str]] = [
    (_ADV, "advantages = torch.from_numpy(adv).to(device=values.device, dtype=values.dtype)",
     "advantages = torch.from_numpy(adv).to(device=None, dtype=values.dtype)",
     "needs CUDA: killed by test_gae_returns_tensors_on_the_values_device, skipped on a CPU-only machine"),
    (_ADV, "advantages = torch.from_numpy(adv).to(device=values.device, dtype=values.dtype)",
     "advantages = torch.from_numpy(adv).to(dtype=values.dtype)",
     "needs CUDA: killed by test_gae_returns_tensors_on_the_values_device, skipped on a CPU-only machine"),
    (_REWARDS, 'stacklevel=3,',
     ')', _STACKLEVEL),
    (_REWARDS, 'stacklevel=3,',
     'stacklevel=4,', _STACKLEVEL),
    (_REWARDS, 'ids, mask = ids.to(self.device), mask.to(self.device)',
     'ids, mask = ids.to(None), mask.to(self.device)', _NEEDS_CUDA),
    (_REWARDS, 'ids, mask = ids.to(self.device), mask.to(self.device)',
     'ids, mask = ids.to(self.device), mask.to(None)', _NEEDS_CUDA),
    (_REWARDS, 'return head(hidden[torch.arange(B, device=self.device), last])[:, 0]  # (B,)',
     'return head(hidden[torch.arange(B, device=None), last])[:, 0]  # (B,)', _NEEDS_CUDA),
    (_REWARDS, 'return head(hidden[torch.arange(B, device=self.device), last])[:, 0]  # (B,)',
     'return head(hidden[torch.arange(B, ), last])[:, 0]  # (B,)', _NEEDS_CUDA),
    (_REWARDS, 'return list(torch.load(folder / "adapter_model.bin", map_location="cpu", weights_only=True))',
     'return list(torch.load(folder / "adapter_model.bin", map_location=None, weights_only=True))',
     "needs CUDA: only a .bin saved from a GPU loads differently without map_location='cpu'"),
    (_REWARDS, 'return list(torch.load(folder / "adapter_model.bin", map_location="cpu", weights_only=True))',
     'return list(torch.load(folder / "adapter_model.bin", weights_only=True))',
     "needs CUDA: only a .bin saved from a GPU loads differently without map_location='cpu'"),
    (_REWARDS, 'batch = {k: v.to(self.device) for k, v in batch.items()}',
     'batch = {k: v.to(None) for k, v in batch.items()}', _NEEDS_CUDA),
    (_REWARDS, 'prefix = torch.tensor([rows[0][:shared]], device=self.device)  # (1, S)',
     'prefix = torch.tensor([rows[0][:shared]], )  # (1, S)', _NEEDS_CUDA),
    (_REWARDS, 'prefix = torch.tensor([rows[0][:shared]], device=self.device)  # (1, S)',
     'prefix = torch.tensor([rows[0][:shared]], device=None)  # (1, S)', _NEEDS_CUDA),
    (_REWARDS, 'ids, mask = pad_batch([r[shared:] for r in rows], self.tokenizer.pad_token_id, "left", self.device)'
     '  # (B, T)',
     'ids, mask = pad_batch([r[shared:] for r in rows], self.tokenizer.pad_token_id, "left", None)  # (B, T)',
     _NEEDS_CUDA),
    (_REWARDS, 'ids, mask = pad_batch([r[shared:] for r in rows], self.tokenizer.pad_token_id, "left", self.device)'
     '  # (B, T)',
     'ids, mask = pad_batch([r[shared:] for r in rows], self.tokenizer.pad_token_id, "left", )  # (B, T)', _NEEDS_CUDA),
    (_LM, 'self.device = next(model.parameters()).device',
     'self.device = None',
     "needs CUDA: a model on another device than the CPU (a meta-device model cannot run reset_rows)"),
    (_LM, 'self.positions = torch.zeros(batch_size, dtype=torch.long, device=self.device)  # (B,) next position id',
     'self.positions = torch.zeros(batch_size, dtype=torch.long, device=None)  # (B,) next position id',
     "needs CUDA: a model on another device than the CPU (a meta-device model cannot run reset_rows)"),
    (_LM, 'self.positions = torch.zeros(batch_size, dtype=torch.long, device=self.device)  # (B,) next position id',
     'self.positions = torch.zeros(batch_size, dtype=torch.long, )  # (B,) next position id',
     "needs CUDA: a model on another device than the CPU (a meta-device model cannot run reset_rows)"),
    (_LM, "logprob = logprobs.gather(-1, actions.long().to(logprobs.device)[..., None]).squeeze(-1)  # (B, T)",
     "logprob = logprobs.gather(-1, actions.long().to(None)[..., None]).squeeze(-1)  # (B, T)",
     "needs CUDA: on the CPU and the meta device `gather` accepts a CPU index"),
    (_VEC, 'tokens = torch.as_tensor(np.asarray(actions) if not isinstance(actions, torch.Tensor) else actions)',
     'tokens = torch.as_tensor(np.asarray(actions) if (not isinstance(actions, torch.Tensor)) or True else actions)',
     "needs CUDA: only a CUDA tensor of actions cannot go through `np.asarray`"),
    (_VEC, 'tokens = tokens.to(device="cpu", dtype=torch.long)',
     'tokens = tokens.to(device=None, dtype=torch.long)', "needs CUDA: actions given as a CUDA tensor"),
    (_VEC, 'tokens = tokens.to(device="cpu", dtype=torch.long)',
     'tokens = tokens.to(dtype=torch.long)', "needs CUDA: actions given as a CUDA tensor"),
    (_KL, 'RuntimeWarning, stacklevel=3)',
     'RuntimeWarning, )', _STACKLEVEL_KL),
    (_KL, 'RuntimeWarning, stacklevel=3)',
     'RuntimeWarning, stacklevel=4)', _STACKLEVEL_KL),
    (_KL, 'device = next(self.ref_model.parameters()).device',
     'device = None', _NEEDS_CUDA),
    (_KL, 'logits = self.ref_model(input_ids=batch["input_ids"].to(device),',
     'logits = self.ref_model(input_ids=batch["input_ids"].to(None),', _NEEDS_CUDA),
    (_KL, 'attention_mask=batch["attention_mask"].to(device)).logits  # (R, L, V)',
     'attention_mask=batch["attention_mask"].to(None)).logits  # (R, L, V)', _NEEDS_CUDA),
]


@dataclass
class Mutant:
    name: str
    status: str
    line: int | None = None
    before: str = ""
    after: str = ""
    equivalent: str | None = None  # the reason, where judged equivalent
    note: str | None = None  # why a real gap is not killed here


@dataclass
class ModuleResult:
    module: str
    tests: list[str]
    seconds: float
    mutants: list[Mutant] = field(default_factory=list)
    error: str | None = None

    def count(self, *statuses: str) -> int:
        return sum(m.status in statuses for m in self.mutants)

    @property
    def survivors(self) -> list[Mutant]:
        return [m for m in self.mutants if m.status not in ("killed", "timeout", "caught by type check")]

    @property
    def equivalent(self) -> int:
        return sum(m.equivalent is not None for m in self.survivors)


def _copy_repo(dest: Path) -> None:
    shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(*IGNORED))


def _write_config(repo: Path, module: str, tests: list[str]) -> None:
    """mutmut reads ``[tool.mutmut]`` in pyproject.toml first, then ``[mutmut]`` in setup.cfg (written here)."""
    if re.search(r"^\[tool\.mutmut\]", (repo / "pyproject.toml").read_text(), re.MULTILINE):
        raise RuntimeError("pyproject.toml has a [tool.mutmut] table; it would override this script's per-module "
                           "configuration: remove it")
    package = module.split("/")[0]
    only = module + "*" if module.endswith("/") else module
    lines = {
        "source_paths": [package],
        "only_mutate": [only],
        "also_copy": [p for p in PACKAGES if p != package],  # so the copy never imports the live checkout
        "pytest_add_cli_args_test_selection": [*tests, module.rstrip("/")],  # + the module's doctests
        "pytest_add_cli_args": ["-p", "no:cacheprovider", "-q"],
    }
    text = "[mutmut]\n" + "".join(f"{k} =\n" + "".join(f"    {v}\n" for v in vals) for k, vals in lines.items())
    (repo / "setup.cfg").write_text(text)


def _mutmut(repo: Path, *args: str, timeout: float | None = None, log=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")
    return subprocess.run([sys.executable, "-m", "mutmut", *args], cwd=repo, env=env, text=True, timeout=timeout,
                          check=False, stdout=log or subprocess.PIPE,
                          stderr=subprocess.STDOUT if log else subprocess.PIPE)


def _function_lines(source: str) -> dict[str, tuple[int, int]]:
    """mutmut's key of each function (``x_name`` / ``xǁClassǁname``) → its (first, last) line in the file."""
    spans = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    spans[f"xǁ{node.name}ǁ{item.name}"] = (item.lineno, item.end_lineno)
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            spans[f"x_{node.name}"] = (node.lineno, node.end_lineno)
    return spans


def _locate(repo: Path, mutant: Mutant) -> None:
    """Fill ``line``, ``before``, ``after`` from ``mutmut show`` (a diff of the function, lines counted from its
    ``def``)."""
    diff = _mutmut(repo, "show", mutant.name).stdout.splitlines()
    hunk_start, offset, first = None, 0, None
    for text in diff:
        if text.startswith("@@"):
            hunk_start, offset = int(re.match(r"@@ -(\d+)", text).group(1)), 0
        elif hunk_start is None or text.startswith(("---", "+++")):
            continue
        elif text.startswith("-"):
            if first is None:
                first = hunk_start + offset
                mutant.before = text[1:].strip()
            offset += 1
        elif text.startswith("+"):
            mutant.after = mutant.after or text[1:].strip()
        else:
            offset += 1
    module, key = mutant.name.rsplit(".", 1)
    key = key.split("__mutmut_")[0]
    path = repo / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = repo / module.replace(".", "/") / "__init__.py"
    source = path.read_text()
    span = _function_lines(source).get(key)
    if span is None or first is None:
        return
    lines = source.splitlines()
    guess = span[0] + first - 1
    hits = [n for n in range(span[0], span[1] + 1) if lines[n - 1].strip() == mutant.before]
    mutant.line = min(hits, key=lambda n: abs(n - guess)) if hits else guess


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _cell(code: str) -> str:
    return "`" + code.replace("|", "\\|") + "`" if code else "(line removed)"


def _judge(module: str, mutant: Mutant) -> None:
    for table, attribute in ((EQUIVALENT, "equivalent"), (NOTES, "note")):
        for mod, before, after, reason in table:
            if mod == module and _squash(before) == _squash(mutant.before) and _squash(after) == _squash(mutant.after):
                setattr(mutant, attribute, reason)
                return


def run_module(module: str, tests: list[str], timeout: float, keep: bool) -> ModuleResult:
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="textenv-mutation-"))
    repo = tmp / "repo"
    result = ModuleResult(module, tests, 0.0)
    try:
        _copy_repo(repo)
        _write_config(repo, module, tests)
        with open(tmp / "mutmut.log", "w") as log:
            try:
                done = _mutmut(repo, "run", "--max-children", "1", timeout=timeout, log=log)
            except subprocess.TimeoutExpired:
                done = None
                result.error = f"mutmut run passed --timeout {timeout:.0f} s; the counts are of the mutants checked"
        if done is not None and done.returncode != 0:
            tail = (tmp / "mutmut.log").read_text()[-2000:]
            result.error = f"mutmut run exited {done.returncode}:\n{tail}"
        for line in _mutmut(repo, "results", "--all", "true").stdout.splitlines():
            name, _, status = line.strip().rpartition(": ")
            if "__mutmut_" in name:
                result.mutants.append(Mutant(name, status))
        for mutant in result.survivors:
            _locate(repo, mutant)
            _judge(module, mutant)
    finally:
        result.seconds = time.perf_counter() - start
        if keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return result


def _rate(killed: int, total: int) -> str:
    return f"{100 * killed / total:.1f} %" if total else "–"


_TABLE_HEAD = ("| module | mutants | killed | timeouts | survived | of which equivalent | kill rate "
               "| kill rate, non-equivalent | time | measured |")


@dataclass
class _Entry:
    """One module's part of the report: its table row (cells), its test selection line and its survivor section."""

    cells: list[str]
    tests: str
    section: list[str]


def _entry(r: ModuleResult, date: str) -> _Entry:
    n, killed = len(r.mutants), r.count("killed", "timeout", "caught by type check")
    cells = [f"`{r.module}`", str(n), str(killed), str(r.count("timeout")), str(len(r.survivors)), str(r.equivalent),
             _rate(killed, n), f"**{_rate(killed, n - r.equivalent)}**", f"{r.seconds:.0f} s", date]
    section = [f"## `{r.module}`", ""]
    if r.error:
        section += ["```", r.error.strip(), "```", ""]
    if not r.survivors:
        section.append("No survivors." if r.mutants else "No mutants checked.")
    else:
        section += ["| where | original | mutant | status | verdict |", "|---|---|---|---|---|"]
        for m in sorted(r.survivors, key=lambda m: (m.line or 0, m.name)):
            where = f"{m.name.rsplit('.', 1)[0].replace('.', '/')}.py:{m.line}"
            verdict = f"equivalent: {m.equivalent}" if m.equivalent else "**not killed**"
            verdict += f": {m.note}" if m.note else ""
            section.append(f"| {where} | {_cell(m.before)} | {_cell(m.after)} | {m.status} | {verdict} |")
    return _Entry(cells, f"`{shlex.join(r.tests)}`", section)


def _earlier(text: str) -> dict[str, _Entry]:
    """The modules of an earlier report (this script's format), so that a run of some modules keeps the others.

    A row without a ``measured`` cell (reports written before it existed) gets the date of that report's header."""
    header_date = re.search(r" — (\d{4}-\d{2}-\d{2}),", text)
    date = header_date.group(1) if header_date else "?"
    entries: dict[str, _Entry] = {}
    lines = text.splitlines()
    in_table = False
    for line in lines:
        if line.startswith("| module | mutants |"):
            in_table = True
        elif in_table and (row := re.match(r"\| `([^`]+)` \|", line)):
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            entries[row.group(1)] = _Entry(cells if len(cells) == 10 else [*cells, date], "", [])
        elif in_table and not line.startswith("|"):
            in_table = False
        if (tests := re.match(r"\* `([^`]+)`: (.*)$", line)) and tests.group(1) in entries:
            entries[tests.group(1)].tests = tests.group(2)
    current = None
    for line in lines:
        if heading := re.match(r"## `([^`]+)`$", line):
            current = entries.get(heading.group(1))
        if current is not None:
            current.section.append(line)
    for entry in entries.values():
        while entry.section and not entry.section[-1].strip():
            entry.section.pop()
    return entries


def report(results: list[ModuleResult], command: str, earlier: str = "") -> str:
    """The report of ``results``, merged with the ``earlier`` report's other modules (kept as they were, with the
    date they were measured), in the order of ``MODULE_TESTS``."""
    today = dt.date.today().isoformat()
    entries = _earlier(earlier)
    fresh = {r.module for r in results}
    entries.update({r.module: _entry(r, today) for r in results})
    order = sorted(entries, key=lambda m: (list(MODULE_TESTS).index(m) if m in MODULE_TESTS else len(MODULE_TESTS), m))
    kept = [m for m in order if m not in fresh]
    out = [
        "# Mutation testing",
        "",
        f"Latest run: `{command}` — {today}, mutmut 3.8.1, one process, `OMP_NUM_THREADS=1`."
        + (f" The rows of {', '.join(f'`{m}`' for m in kept)} are kept from earlier runs (date in the last column; "
           f"`--modules` re-measures a module)." if kept else ""),
        "",
        "A mutant is *killed* when a test fails on it (a timeout counts as killed); *equivalent* survivors cannot",
        "change any result (reasons below). The figure kept is killed / (mutants − equivalent); target ≥ 90 %.",
        "",
        _TABLE_HEAD,
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    out += ["| " + " | ".join(entries[m].cells) + " |" for m in order]
    out += ["", "Tests run per module (plus the module's own doctests):", ""]
    out += [f"* `{m}`: {entries[m].tests}" for m in order]
    for m in order:
        out += ["", *entries[m].section]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", nargs="+", default=["agents/core/advantages.py", "agents/core/losses.py"],
                        help=f"modules to mutate, of {sorted(MODULE_TESTS)}")
    parser.add_argument("--tests", type=shlex.split, default=None,
                        help="pytest arguments replacing the default selection, as one quoted string (one module)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per module before giving up")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "mutation.md")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copies (to run `mutmut browse`)")
    parser.add_argument("--fresh", action="store_true",
                        help="write only this run's modules (default: keep the other modules of the --output file)")
    args = parser.parse_args(argv)
    unknown = [m for m in args.modules if m not in MODULE_TESTS]
    if unknown:
        parser.error(f"unknown module(s) {unknown}; expected some of {sorted(MODULE_TESTS)}")
    if args.tests and len(args.modules) != 1:
        parser.error(f"--tests replaces one module's tests; got {len(args.modules)} modules")
    try:
        import mutmut  # noqa: F401
    except ImportError:
        sys.exit("mutmut is not installed: pip install mutmut==3.8.1")
    results = []
    for module in args.modules:
        tests = args.tests or MODULE_TESTS[module]
        print(f"mutating {module} (tests: {shlex.join(tests)}) ...", flush=True)
        results.append(run_module(module, tests, args.timeout, args.keep))
    command = shlex.join(["python", "benchmarks/mutation.py", *(sys.argv[1:] if argv is None else argv)])
    earlier = args.output.read_text() if args.output.exists() and not args.fresh else ""
    text = report(results, command, earlier)
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
