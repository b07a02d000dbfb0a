"""Hyperparameter sweeps: Optuna storage, search spaces, pruning and plots for numl's Hydra sweeper.

The sweeper itself is the Hydra plugin in `hydra_plugins/numl_optuna_sweeper`; this package holds what
both the sweeper process and each trial's training process use.
"""
