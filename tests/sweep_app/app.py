"""A tiny Hydra + Lightning app with the same shape as numl.train, for the sweeper's tests.

It fits one weight w to 1 by SGD: a larger learning rate converges in fewer epochs, so `val/score`
(= -(w - 1)^2, logged each epoch) depends on the searched `lr`. `fail_below_lr` makes low-lr trials raise.
"""

from __future__ import annotations

import hydra
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig


class FitOneWeight(pl.LightningModule):
    def __init__(self, lr: float) -> None:
        super().__init__()
        self.lr = lr
        self.w = torch.nn.Parameter(torch.zeros(()))

    def training_step(self, batch, batch_idx):
        return (self.w - batch[0].mean()) ** 2

    def validation_step(self, batch, batch_idx):
        self.log("val/score", -((self.w - 1.0) ** 2))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    if cfg.lr < cfg.fail_below_lr:
        raise RuntimeError(f"lr={cfg.lr} below fail_below_lr={cfg.fail_below_lr}")
    ones = torch.utils.data.TensorDataset(torch.ones(8, 1))
    loader = torch.utils.data.DataLoader(ones, batch_size=2)
    callbacks = [instantiate(c) for c in (cfg.callbacks or {}).values()]
    trainer = pl.Trainer(
        max_epochs=cfg.max_epochs, callbacks=callbacks, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", num_sanity_val_steps=0,
    )
    trainer.fit(FitOneWeight(cfg.lr), loader, loader)
    return float(trainer.callback_metrics[cfg.optimized_metric])


if __name__ == "__main__":
    main()
