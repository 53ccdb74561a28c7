"""Agents for embodied control tasks (:mod:`robotics`): PPO with MLP policies on MuJoCo through Gymnasium, and on
the language-conditioned BabyAI tasks with instruction-conditioned policies (:mod:`agents.control.language`)."""

from agents.control.language import LanguageBCConfig, evaluate_success, train_language_bc
from agents.control.ppo import ControlPPOConfig, ReturnScaler, make_vector_env, plot_learning_curve, train_control_ppo

__all__ = ["ControlPPOConfig", "LanguageBCConfig", "ReturnScaler", "evaluate_success", "make_vector_env",
           "plot_learning_curve", "train_control_ppo", "train_language_bc"]
