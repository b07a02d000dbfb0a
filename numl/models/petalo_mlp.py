"""Fully connected network on the SiPM charge (and time) pattern of a PETALO event.

The network normalises its own input so that exported models take raw readout: charges are divided by
the event's total charge (the pattern shape carries the position, the total the energy, added as
log(total)); times are in units of `time_scale_ns`. Events that cannot be reconstructed (NaN or inf
anywhere, or no charge at all) get `invalid_output` in every output, so that they are flagged, never
given a made-up answer.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class SiPMPatternMLP(nn.Module):
    """MLP on [B, channels, rows, columns] SiPM patterns; channels 0 and 1 are inner and outer charge [pe].

    Args:
        in_channels: 2 (charges) or 4 (charges, then first-photon times [ns]).
        n_rows, n_columns: SiPM rows (z) and phi columns of the readout window.
        hidden: widths of the hidden layers.
        n_outputs: number of outputs (e.g. 6: three coordinates and three log variances; 1: a logit).
        invalid_output: value of every output for an event that cannot be reconstructed (nan: position;
            inf: a tagger logit that says "discard").
    """

    def __init__(
        self,
        in_channels: int = 4,
        n_rows: int = 16,
        n_columns: int = 24,
        hidden: list[int] = (512, 256, 128),
        n_outputs: int = 6,
        dropout: float = 0.0,
        time_scale_ns: float = 5.0,
        invalid_output: float = math.nan,
    ) -> None:
        super().__init__()
        if in_channels not in (2, 4):
            raise ValueError(f"model.in_channels={in_channels}: must be 2 (charges) or 4 (charges and times)")
        self.in_channels, self.n_rows, self.n_columns = int(in_channels), int(n_rows), int(n_columns)
        self.n_outputs = int(n_outputs)
        self.time_scale_ns = float(time_scale_ns)
        self.invalid_output = float(invalid_output)
        n_sensors = 2 * self.n_rows * self.n_columns
        # Charge fractions are O(1 / n_sensors); scaling by n_sensors makes them O(1).
        self.charge_scale = float(n_sensors)
        n_pattern = self.in_channels * self.n_rows * self.n_columns
        # First layer split in two so that the input needs no concatenation (this runs at 1e5 events/s):
        # one weight matrix for the normalised pattern, one weight vector for log(total charge).
        widths = [int(h) for h in hidden]
        self.first = nn.Linear(n_pattern, widths[0])
        self.total_weight = nn.Parameter(torch.zeros(widths[0]))
        layers: list[nn.Module] = [nn.SiLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        for w_in, w_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Linear(w_in, w_out), nn.SiLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(widths[-1], self.n_outputs))
        self.net = nn.Sequential(*layers)

    def forward(self, pattern: torch.Tensor) -> torch.Tensor:
        if (
            pattern.dim() != 4
            or pattern.shape[1] != self.in_channels
            or pattern.shape[2] != self.n_rows
            or pattern.shape[3] != self.n_columns
        ):
            raise ValueError(
                "sipm_pattern has shape "
                + str(list(pattern.shape))
                + "; expected [batch, "
                + str(self.in_channels)
                + ", "
                + str(self.n_rows)
                + ", "
                + str(self.n_columns)
                + "]"
            )
        flat = pattern.flatten(1)
        n_charge = 2 * self.n_rows * self.n_columns
        charge = flat[:, :n_charge]
        total = charge.sum(dim=1, keepdim=True)
        # NaN or inf anywhere makes the row sum non-finite: one reduction flags the event.
        check = total if self.in_channels == 2 else flat.sum(dim=1, keepdim=True)
        valid = torch.isfinite(check) & (total > 0)
        safe_total = torch.where(valid, total, torch.ones_like(total))
        x = charge * (self.charge_scale / safe_total)
        if self.in_channels == 4:
            x = torch.cat([x, flat[:, n_charge:] / self.time_scale_ns], dim=1)
        hidden = self.first(x) + torch.log(safe_total) / 10.0 * self.total_weight
        out = self.net(hidden)
        # Rows are independent, so a NaN event spoils only its own row, which is replaced here.
        return torch.where(valid, out, torch.full_like(out, self.invalid_output))
