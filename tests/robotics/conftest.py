import os

os.environ.setdefault("MUJOCO_GL", "egl")  # headless; the checkers and renderers must never open a window
