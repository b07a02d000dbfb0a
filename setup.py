"""Package discovery with numl's configs inside the package: the top-level conf/ (the one source) is mapped to
numl.conf, so hydra.main(config_path="pkg://numl.conf") finds the configs in a wheel, an editable install and
a checkout alike. Everything else is in pyproject.toml."""

from setuptools import find_namespace_packages, setup

# conf/local/ holds one machine's settings (gitignored): it never ships.
CONFIG_FOLDERS = [f"numl.conf.{p}" for p in find_namespace_packages(where="conf") if p.split(".")[0] != "local"]

setup(
    packages=find_namespace_packages(include=["numl*", "hydra_plugins*"]) + ["numl.conf", *CONFIG_FOLDERS],
    package_dir={"numl.conf": "conf"},
)
