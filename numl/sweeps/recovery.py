"""Find trials a killed sweeper left RUNNING, fail them and queue their parameters again.

Two signals, because neither covers every case:

- the owner: each trial records which sweeper process runs it (`numl_owner` = host:pid:start time).
  A sweeper resumed on the same host fails at once the trials whose owner process is gone, so a
  sweep killed and restarted within the heartbeat grace period (3 x heartbeat_interval_s) loses nothing;
  a live owner (another worker on this host) is left alone;
- the heartbeat, for owners on other hosts: RDB storages use Optuna's own (the trial is failed once no
  heartbeat came for the grace period); the journal storage has none, so the sweeper writes the time
  into the trial's system attribute `numl_heartbeat` and the same grace period applies.

A failed trial is re-created WAITING with the same parameters by Optuna's
`RetryHeartbeatStaleTrialCallback` (the retry's `failed_trial` attribute names the original, whose
directory the retry reuses); the next `study.ask()` takes it before sampling anything new.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import warnings
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

log = logging.getLogger(__name__)

OWNER_ATTR = "numl_owner"
HEARTBEAT_ATTR = "numl_heartbeat"
# A retried trial killed again is retried again, at most this often (then it stays FAIL).
MAX_RETRY = 3


def _process_start(pid: int) -> str:
    """Start time of a process in clock ticks since boot (Linux), to tell a reused pid apart; '' elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{_process_start(os.getpid())}"


def _owner_dead(owner: str) -> bool:
    """True only when the owner ran on this host and its process is gone (or its pid now names another)."""
    try:
        host, pid, start = owner.rsplit(":", 2)
        pid_number = int(pid)
    except ValueError:
        return False
    if host != socket.gethostname():
        return False
    try:
        os.kill(pid_number, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # exists, another user's
    return bool(start) and _process_start(pid_number) not in ("", start)


def retry_callback() -> optuna.storages.RetryHeartbeatStaleTrialCallback:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)


def recover_dead_trials(study: optuna.Study, storage: Any, grace_period_s: float) -> list[str]:
    """Fail the RUNNING trials of dead sweepers and queue their parameters again; one text per trial."""
    running = {t._trial_id: t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    recovered = []
    if isinstance(storage, optuna.storages.RDBStorage) and storage.get_heartbeat_interval():
        # Optuna's own: fails trials without a heartbeat for grace_period and calls the storage's
        # heartbeat_stale_trial_callback (retry_callback(), set by numl.sweeps.storage.open_storage).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        for trial_id, trial in list(running.items()):
            if storage.get_trial(trial_id).state != TrialState.RUNNING:
                recovered.append(f"trial {trial.number} (heartbeat stale)")
                del running[trial_id]
    found: dict[int, str] = {}
    for trial_id, trial in running.items():
        owner = trial.system_attrs.get(OWNER_ATTR)
        beat = trial.system_attrs.get(HEARTBEAT_ATTR)
        if owner and _owner_dead(owner):
            found[trial_id] = f"trial {trial.number} (sweeper pid {owner.split(':')[-2]} is gone)"
        elif beat is not None and time.time() - float(beat) > grace_period_s:
            found[trial_id] = f"trial {trial.number} (no heartbeat for {time.time() - float(beat):.0f} s)"
    retry = retry_callback()
    for trial_id, text in found.items():
        try:
            if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                continue
        except UpdateFinishedTrialError:
            continue  # another worker finished or failed it first
        retry(study, storage.get_trial(trial_id))
        recovered.append(text)
    return recovered


class Heartbeat:
    """Heartbeats of in-flight trials, sent from the sweeper process every `interval_s`."""

    def __init__(self, storage: Any, trial_ids: list[int], interval_s: int) -> None:
        self.rdb = isinstance(storage, optuna.storages.RDBStorage) and bool(storage.get_heartbeat_interval())
        self.storage, self.trial_ids, self.interval_s = storage, trial_ids, interval_s
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def beat(self) -> None:
        for trial_id in list(self.trial_ids):
            try:
                if self.rdb:
                    self.storage.record_heartbeat(trial_id)
                else:
                    self.storage.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())
            except UpdateFinishedTrialError:
                self.trial_ids.remove(trial_id)  # finished (pruned by its own process) while the batch runs

    def _run(self) -> None:
        while not self.stop.wait(self.interval_s):
            try:
                self.beat()
            except Exception as err:  # a lost heartbeat only delays recovery; the trial goes on
                log.warning("sweep: heartbeat not recorded: %s", err)

    def __enter__(self) -> Heartbeat:
        if self.interval_s > 0:
            self.beat()
            self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()
