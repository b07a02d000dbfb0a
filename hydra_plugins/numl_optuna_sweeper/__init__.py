"""numl's Hydra sweeper: an Optuna study driven through Hydra multirun (`hydra/sweeper=numl_optuna`).

Why not the released `hydra-optuna-sweeper`: its latest release (1.3.0, checked 2026-11-23 with
`pip download hydra-optuna-sweeper --no-deps`) declares `optuna<3.0.0,>=2.10.0`, so it cannot run with
the Optuna >= 4 numl needs. Its SQL storage is also broken on SQLAlchemy 2: in a clean venv with
optuna 2.10.1 and SQLAlchemy 2.1.9, `optuna.create_study(storage="sqlite:///trap.db")` fails at once in
`RDBStorage.__init__` -> `check_table_schema_compatibility` with `AssertionError` (`version is not None`),
so persistent studies, and with them resume and several workers, do not work at all.

This plugin is small on purpose: Optuna's ask/tell API plus what the old plugin lacked:
persistent storage (SQLite in the sweep directory by default, any database URL or a journal file),
resume by study name, several workers on one study, per-epoch pruning through a Lightning callback
injected into each trial, failure tolerance, and a report with plots at the end. See docs/scaling.md.
"""
