"""Agents for embodied control tasks (MuJoCo through Gymnasium, :mod:`robotics`): PPO with a Gaussian MLP policy."""

from agents.control.ppo import ControlPPOConfig, ReturnScaler, make_vector_env, plot_learning_curve, train_control_ppo

__all__ = ["ControlPPOConfig", "ReturnScaler", "make_vector_env", "plot_learning_curve", "train_control_ppo"]
