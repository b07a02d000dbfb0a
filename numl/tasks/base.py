"""The one LightningModule every numl task subclasses.

Modelled on torchgeo's BaseTask: the constructor calls `configure_losses()` and
`configure_metrics()`, so a task overrides only the loss, the metrics and how a batch maps to
model inputs and predictions. Optimizer and scheduler come from Hydra config nodes.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics import MetricCollection

STAGES = ("train", "val", "test")


class BaseTask(pl.LightningModule):
    #: batch key holding the model input; Captum attributions are taken with respect to it
    input_key: str = "inputs"
    #: further constructor arguments that are modules (e.g. a second network): kept out of the hyperparameters
    module_arguments: tuple[str, ...] = ()

    def __init__(
        self,
        model: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: dict[str, Any] | None = None,
        **hparams: Any,
    ) -> None:
        super().__init__()
        # The model object is stored as a module; its config is in the run's resolved config.
        self.save_hyperparameters(ignore=["model", "optimizer", "scheduler", *self.module_arguments])
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_config = dict(scheduler) if scheduler else None
        self.configure_losses()
        metrics = self.configure_metrics()
        self.metrics = nn.ModuleDict({f"{stage}_metrics": metrics.clone(prefix=f"{stage}/") for stage in STAGES})

    # ----- hooks a task overrides -------------------------------------------------------------
    def configure_losses(self) -> None:
        """Create loss modules (stored as attributes)."""

    def configure_metrics(self) -> MetricCollection:
        return MetricCollection({})

    def forward(self, batch: dict[str, torch.Tensor]) -> Any:
        return self.model(batch[self.input_key])

    def compute_loss(self, outputs: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement compute_loss")

    def update_metrics(self, metrics: MetricCollection, outputs: Any, batch: dict[str, torch.Tensor]) -> None:
        if len(metrics):
            raise NotImplementedError(f"{type(self).__name__} has metrics but no update_metrics")

    def predictions(self, outputs: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError(f"{type(self).__name__} does not define predictions")

    def attribution_forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Score(s) per event that Captum explains, computed from the input tensor alone."""
        return self.model(inputs)

    # ----- shared machinery -------------------------------------------------------------------
    def _shared_step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        outputs = self(batch)
        loss = self.compute_loss(outputs, batch)
        batch_size = len(next(iter(batch.values())))
        self.log(f"{stage}/loss", loss, on_step=stage == "train", on_epoch=True, prog_bar=True,
                 batch_size=batch_size, sync_dist=stage != "train")
        metrics = self.metrics[f"{stage}_metrics"]
        if len(metrics):
            self.update_metrics(metrics, outputs, batch)
            self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=stage == "val", batch_size=batch_size)
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0):
        return {k: v.detach().cpu() for k, v in self.predictions(self(batch), batch).items()}

    def configure_optimizers(self):
        if self.optimizer_factory is None:
            raise RuntimeError("no optimizer configured")
        optimizer = self.optimizer_factory(params=[p for p in self.parameters() if p.requires_grad])
        if not self.scheduler_config:
            return optimizer
        config = dict(self.scheduler_config)
        factory = config.pop("scheduler")
        kwargs = {}
        func = getattr(factory, "func", factory)
        given = getattr(factory, "keywords", {})
        if "total_steps" in inspect.signature(func).parameters and "total_steps" not in given:
            kwargs["total_steps"] = int(self.trainer.estimated_stepping_batches)
        scheduler = factory(optimizer, **kwargs)
        lr_scheduler = {"scheduler": scheduler, "interval": config.get("interval", "epoch"),
                        "frequency": config.get("frequency", 1)}
        if config.get("monitor"):
            lr_scheduler["monitor"] = config["monitor"]
        return {"optimizer": optimizer, "lr_scheduler": lr_scheduler}
