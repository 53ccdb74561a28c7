"""Old module paths of the flat ``agents/`` layout, kept importable with a ``DeprecationWarning``.

``import agents.sft`` (or ``from agents.lm_policy import LMPolicy``) finds the module at its new path, warns once
per old name, and registers the same module object under the old name, so ``isinstance`` checks and
monkeypatching see one module, not a copy.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {
    "agents.advantages": "agents.core.advantages",
    "agents.losses": "agents.core.losses",
    "agents.update": "agents.core.update",
    "agents.rollout": "agents.core.rollout",
    "agents.onpolicy": "agents.core.onpolicy",
    "agents.run": "agents.core.run",
    "agents.policy": "agents.policies.mlp",
    "agents.lm_policy": "agents.policies.lm",
    "agents.sampler": "agents.policies.sampler",
    "agents.sb3": "agents.policies.sb3",
    "agents.ppo": "agents.text.ppo",
    "agents.pg": "agents.text.pg",
    "agents.sft": "agents.text.sft",
    "agents.dpo": "agents.text.dpo",
    "agents.supervised": "agents.text.supervised",
    "agents.evaluation": "agents.text.evaluation",
    "agents.pipeline": "agents.text.pipeline",
    "agents.train_cli": "agents.cli.train",
    "agents.bench": "agents.cli.bench",
    "agents.throughput": "agents.cli.throughput",
}
"""Old module path → new module path (0.2)."""


class _MovedLoader(importlib.abc.Loader):
    def __init__(self, new: str):
        self.new = new

    def create_module(self, spec):
        warnings.warn(f"{spec.name} moved to {self.new}; import it from there (the old path will be removed)",
                      DeprecationWarning, stacklevel=2)
        module = importlib.import_module(self.new)
        self._spec = module.__spec__
        return module

    def exec_module(self, module) -> None:
        module.__spec__ = self._spec  # the import system set the old name's spec on the shared module; undo it


class _MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        new = MOVED.get(fullname)
        if new is None:
            return None
        return importlib.util.spec_from_loader(fullname, _MovedLoader(new))


def install() -> None:
    if not any(isinstance(finder, _MovedFinder) for finder in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
