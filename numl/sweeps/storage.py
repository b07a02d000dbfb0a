"""Open an Optuna storage from one string, the same in the sweeper and in every trial process.

- a database URL (`sqlite:///...`, `postgresql://...`, `mysql+pymysql://...`): `optuna.storages.RDBStorage`;
  in the sweeper with Optuna's heartbeats and `RetryHeartbeatStaleTrialCallback`, so trials of a killed
  sweeper are found stale and retried with their parameters (numl.sweeps.recovery);
- a file path ending in `.journal`: Optuna's journal file (append-only, safe on shared file systems
  where SQLite locking is not, e.g. NFS). Optuna has no heartbeats for it; numl.sweeps.recovery keeps its own.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import optuna

from numl.utils.errors import ConfigError

# SQLite serialises writers; trials and the sweeper write at once, so wait for the lock instead of failing.
_SQLITE_LOCK_TIMEOUT_S = 120


def open_storage(
    spec: str, key: str = "hydra.sweeper.storage", heartbeat_interval_s: int | None = None
) -> optuna.storages.BaseStorage:
    """The storage named by `spec`; a ConfigError naming `key` if it cannot be opened."""
    if spec.endswith(".journal"):
        path = Path(spec)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            backend = optuna.storages.journal.JournalFileBackend(str(path))
        except OSError as err:
            raise ConfigError(f"{key}={spec!r}: cannot open journal file ({err.strerror})") from None
        return optuna.storages.JournalStorage(backend)
    if "://" not in spec:
        raise ConfigError(f"{key}={spec!r}: must be a database URL (sqlite:///..., postgresql://...) or *.journal")
    engine_kwargs = {"connect_args": {"timeout": _SQLITE_LOCK_TIMEOUT_S}} if spec.startswith("sqlite") else {}
    if spec.startswith("sqlite:///"):
        try:
            Path(spec.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"{key}={spec!r}: cannot create the database directory ({err.strerror})") from None
    heartbeat = {}
    if heartbeat_interval_s:
        from numl.sweeps.recovery import retry_callback

        heartbeat = {
            "heartbeat_interval": heartbeat_interval_s,
            "grace_period": 3 * heartbeat_interval_s,
            # Optuna >= 4.9 reads only this argument (setting `failed_trial_callback` later does nothing).
            "heartbeat_stale_trial_callback": retry_callback(),
        }
    try:
        return _rdb_storage(spec, engine_kwargs, heartbeat)
    except Exception as err:  # SQLAlchemy raises driver-specific errors: report any as a config error
        if isinstance(err, ImportError) and err.__cause__ is not None:
            err = err.__cause__  # Optuna's "Failed to import DB access module" hides which driver is missing
        reason = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise ConfigError(f"{key}={spec!r}: cannot connect to the storage ({reason})") from None


def _rdb_storage(spec: str, engine_kwargs: dict, heartbeat: dict) -> optuna.storages.RDBStorage:
    """RDBStorage, safe when several workers open a new database at the same moment.

    Optuna creates the schema (tables, then alembic_version) without a transaction that covers it all, so
    workers started together race: the loser fails with "table ... already exists" (OperationalError) or
    a duplicate alembic_version row (IntegrityError). Seen in CI with two sweep workers on a new SQLite file.
    For a local SQLite file a lock file next to it serialises the creation; for a server database the
    loser retries, and by then the schema exists.
    """
    if spec.startswith("sqlite:///"):
        from filelock import FileLock  # a torch dependency, so always installed

        with FileLock(spec.removeprefix("sqlite:///") + ".lock", timeout=_SQLITE_LOCK_TIMEOUT_S):
            return _rdb_storage_retrying(spec, engine_kwargs, heartbeat)
    return _rdb_storage_retrying(spec, engine_kwargs, heartbeat)


def _rdb_storage_retrying(spec: str, engine_kwargs: dict, heartbeat: dict) -> optuna.storages.RDBStorage:
    import sqlalchemy.exc

    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                # heartbeat_interval is "experimental": a warning on every start would hide real ones.
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(spec, engine_kwargs=engine_kwargs, **heartbeat)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError) as err:
            schema_race = isinstance(err, sqlalchemy.exc.IntegrityError) or "already exists" in str(err)
            if not schema_race or attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")
