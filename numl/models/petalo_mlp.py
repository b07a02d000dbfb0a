"""Fully connected network on the SiPM charge (and time) pattern of a PETALO event.

The network normalises its own input so that exported models take raw readout: charges are divided by
the event's total charge (the pattern shape carries the position, the total the energy, added as
log(total)); times are in units of `time_scale_ns`. With ``projections`` the network sees only the row
and column sums of each face's charge fractions (2 x (rows + columns) numbers instead of the image): a
first layer ten times smaller, for a tagger that must run on the fly. Events that cannot be reconstructed (NaN or inf
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
        projections: input = per-face row and column sums of the charge fractions (charges only).
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
        projections: bool = False,
    ) -> None:
        super().__init__()
        if in_channels not in (2, 4):
            raise ValueError(f"model.in_channels={in_channels}: must be 2 (charges) or 4 (charges and times)")
        if projections and in_channels != 2:
            raise ValueError("model.projections=true: row and column sums are of charges; needs model.in_channels=2")
        self.projections = bool(projections)
        self.in_channels, self.n_rows, self.n_columns = int(in_channels), int(n_rows), int(n_columns)
        self.n_outputs = int(n_outputs)
        self.time_scale_ns = float(time_scale_ns)
        self.invalid_output = float(invalid_output)
        n_sensors = 2 * self.n_rows * self.n_columns
        # Charge fractions are O(1 / n_sensors); scaling by n_sensors makes them O(1).
        self.charge_scale = float(n_sensors)
        n_image = self.in_channels * self.n_rows * self.n_columns
        n_pattern = 2 * (self.n_rows + self.n_columns) if projections else n_image
        # First layer split in two so that the input needs no concatenation (this runs at 1e5 events/s):
        # one weight matrix for the pattern, one weight vector for log(total charge).
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
        # Charge fractions: the division by the total is linear, so it is applied after the first matrix
        # product (on [B, width] instead of [B, n_pattern]), which saves a pass over the input.
        norm = self.charge_scale / safe_total
        if self.projections:
            image = charge.reshape(-1, 2, self.n_rows, self.n_columns)
            x = torch.cat([image.sum(dim=3).flatten(1), image.sum(dim=2).flatten(1)], dim=1)
            first = torch.nn.functional.linear(x, self.first.weight) * norm
        elif self.in_channels == 4:
            w_charge, w_time = self.first.weight[:, :n_charge], self.first.weight[:, n_charge:]
            first = torch.nn.functional.linear(charge, w_charge) * norm
            first = first + torch.nn.functional.linear(flat[:, n_charge:], w_time) / self.time_scale_ns
        else:
            first = torch.nn.functional.linear(charge, self.first.weight) * norm
        hidden = first + self.first.bias + torch.log(safe_total) / 10.0 * self.total_weight
        out = self.net(hidden)
        # Rows are independent, so a NaN event spoils only its own row, which is replaced here.
        return torch.where(valid, out, torch.full_like(out, self.invalid_output))
