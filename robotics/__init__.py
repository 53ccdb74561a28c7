"""Embodied tasks: the Gymnasium MuJoCo v5 tasks, domain randomization for sim-to-real, evaluation, and offline
datasets in Minari format (:mod:`robotics.datasets`, needs the ``offline`` extra).

Importing it registers ``robotics/<Task>-DR-v0`` for InvertedPendulum, Reacher, Hopper, HalfCheetah, Walker2d
and Ant (see :mod:`robotics.tasks`), and ``robotics/BabyAI-<Level>-v0`` for the language-conditioned BabyAI levels
(see :mod:`robotics.language`; they need the ``babyai`` extra).
"""

from robotics.language import LANGUAGE_IDS, register_language_tasks
from robotics.randomization import DomainRandomization, RandomizationConfig
from robotics.tasks import RANDOMIZED, TASKS, check_env_id, make_env, register_tasks

__all__ = ["LANGUAGE_IDS", "RANDOMIZED", "TASKS", "DomainRandomization", "RandomizationConfig", "check_env_id",
           "make_env", "register_language_tasks", "register_tasks"]

register_tasks()
register_language_tasks()
