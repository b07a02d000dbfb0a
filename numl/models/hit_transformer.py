"""Transformer encoder over KM3NeT hits (variable length, padding masks): hits in, one embedding per event out.

Each hit's features are embedded by an MLP; a learned [CLS] token attends to all hits through pre-norm encoder
layers, padded hits masked out with `src_key_padding_mask`. Hit order carries no meaning, so there is no
positional encoding: position and time are features (as in the Kaggle IceCube winners' pulse transformers).
"""

from __future__ import annotations

import torch
from torch import nn

from numl.models.edgeconv import masked_pool, mlp
from numl.sim.km3net.features import HIT_FEATURES


class HitTransformer(nn.Module):
    """(hit_features (B, N, F), hit_mask (B, N)) -> event embedding (B, embedding_dim): the [CLS] token's output
    and the masked pool of the hits' outputs."""

    def __init__(self, n_features: int = len(HIT_FEATURES), d_model: int = 64, n_heads: int = 4, n_layers: int = 3,
                 dim_feedforward: int = 128, dropout: float = 0.0) -> None:
        super().__init__()
        self.embed = mlp([n_features, d_model, d_model], final_activation=False)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d_model))
        layer = nn.TransformerEncoderLayer(d_model, n_heads, dim_feedforward, dropout, batch_first=True,
                                           norm_first=True, activation="gelu")
        # enable_nested_tensor=False: the nested fast path is inference-only and would change padded outputs.
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.embedding_dim = 4 * d_model + 1

    def forward(self, hit_features: torch.Tensor, hit_mask: torch.Tensor) -> torch.Tensor:
        b = hit_features.shape[0]
        tokens = torch.cat([self.cls_token.expand(b, -1, -1), self.embed(hit_features)], dim=1)
        mask = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=hit_mask.device), hit_mask], dim=1)
        h = self.norm(self.encoder(tokens, src_key_padding_mask=~mask))
        return torch.cat([h[:, 0], masked_pool(h[:, 1:], hit_mask)], dim=-1)
