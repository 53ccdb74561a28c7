"""Embodied tasks (MuJoCo through Gymnasium, domain randomization, offline datasets). Not yet populated."""
