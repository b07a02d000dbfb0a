"""numl's CSVLogger keeps a killed run's metrics.csv rows when a run resumes in the same directory."""

from __future__ import annotations

import csv

from numl.loggers import CSVLogger


def _logger(tmp_path):
    # As conf/logger/csv.yaml builds it: a fixed directory, so a resumed run writes the same file.
    return CSVLogger(save_dir=tmp_path, name="csv", version="")


def _log_epochs(logger, epochs, steps_per_epoch=2, extra=None):
    """What Lightning logs: per-step train rows, then one val row per epoch, each saved at once."""
    for epoch in epochs:
        for i in range(steps_per_epoch):
            step = epoch * steps_per_epoch + i
            logger.log_metrics({"train/loss_step": 1.0 / (step + 1), "epoch": epoch}, step=step)
            logger.save()
        metrics = {"val/loss": 0.5 / (epoch + 1), "epoch": epoch, **(extra or {})}
        logger.log_metrics(metrics, step=(epoch + 1) * steps_per_epoch - 1)
        logger.save()


def _rows(tmp_path):
    with (tmp_path / "csv" / "metrics.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def test_resumed_logger_keeps_previous_rows_once(tmp_path):
    killed = _logger(tmp_path)
    killed.log_hyperparams({"lr": 0.1})
    # Killed in epoch 3 after its checkpoint of epoch 1: the rows of epochs 2 and a part of 3 are redone.
    _log_epochs(killed, range(3))
    killed.log_metrics({"train/loss_step": 0.01, "epoch": 3}, step=6)
    killed.save()

    resumed = _logger(tmp_path)
    resumed.log_hyperparams({"lr": 0.1})  # creates the writer before anything is logged, as numl.train does
    assert len(_rows(tmp_path)[1]) == 10, "the old file must stay as it is until the resumed run logs"
    # The resumed run logs a column the killed run had not: the header becomes the union.
    _log_epochs(resumed, range(2, 4), extra={"val/acc": 0.9})
    resumed.finalize("success")

    header, rows = _rows(tmp_path)
    assert set(header) == {"epoch", "step", "train/loss_step", "val/loss", "val/acc"}
    val_epochs = [int(r["epoch"]) for r in rows if r["val/loss"]]
    assert val_epochs == [0, 1, 2, 3]
    train_steps = [int(r["step"]) for r in rows if r["train/loss_step"]]
    assert train_steps == list(range(8))
    assert [r["val/acc"] for r in rows if r["val/loss"]] == ["", "", "0.9", "0.9"]


def test_fresh_run_in_a_used_directory_starts_the_file_afresh(tmp_path):
    old = _logger(tmp_path)
    _log_epochs(old, range(3))
    new = _logger(tmp_path)
    _log_epochs(new, range(2))
    _, rows = _rows(tmp_path)
    assert [int(r["epoch"]) for r in rows if r["val/loss"]] == [0, 1]
    assert len(rows) == 6
