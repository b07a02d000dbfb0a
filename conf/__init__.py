"""numl's Hydra configs, installed as the package numl.conf (see pyproject.toml) for pkg://numl.conf."""
