"""KernelWarehouse attention: from a layer's input to mixing weights over warehouse cells.

Global average pool, FC (hidden = max(in * reduction, 16)), norm, ReLU, FC to ``n + 1`` logits per
mixture (the extra one is the zero cell), then the contrasting-driven attention function of the
paper: divide each mixture's logits by their L1 norm (+1e-3) and blend with the fixed initial
assignment ``beta`` by the temperature ``tau``: ``alpha = (1 - tau) * z + tau * beta``. The zero
cell's weight is dropped at the end: it multiplies a kernel of zeros.

With ``nonlocal_basis_ratio < 1`` the logits for cells that belong to *other* layers are produced
through a smaller basis (FC to ``num_basis``, then a shared FC to the non-local cells), which saves
parameters when warehouses are large; the layer's own cells keep direct logits.
"""

from __future__ import annotations

import torch
from torch import nn

from kwsearch.nn.warehouse import attention_hidden


class KWAttention(nn.Module):
    """Attention of one layer over the ``num_cells`` cells of its warehouse."""

    assignment: torch.Tensor

    def __init__(
        self,
        in_channels: int,
        reduction: float,
        num_cells: int,
        num_mixtures: int,
        initial_cells: list[int],
        start_cell: int,
        cell_num_ratio: float,
        nonlocal_basis_ratio: float,
        norm_layer: str = "batch",
    ) -> None:
        super().__init__()
        hidden = attention_hidden(in_channels, reduction)
        self.num_cells = num_cells
        self.num_mixtures = num_mixtures
        self.fc1 = nn.Linear(in_channels, hidden, bias=norm_layer != "batch")
        self.norm = nn.BatchNorm1d(hidden) if norm_layer == "batch" else nn.LayerNorm(hidden)
        self.act = nn.ReLU(inplace=True)

        per_mixture = num_cells + 1
        self.num_local_cells = int(cell_num_ratio * num_mixtures)
        self.num_nonlocal_cells = num_cells - self.num_local_cells
        self.start_cell = start_cell
        if nonlocal_basis_ratio >= 1.0:
            self.num_basis = None
            self.fc2 = nn.Linear(hidden, per_mixture * num_mixtures)
        else:
            self.num_basis = max(int(self.num_nonlocal_cells * nonlocal_basis_ratio), 16)
            self.fc2 = nn.Linear(
                hidden, (self.num_local_cells + self.num_basis + 1) * num_mixtures, bias=False
            )
            self.fc3 = nn.Linear(self.num_basis, self.num_nonlocal_cells, bias=False)
            self.basis_bias = nn.Parameter(torch.zeros(per_mixture * num_mixtures))

        # beta: one-hot rows over (cells + zero cell); -1 in initial_cells means the zero cell.
        assignment = torch.zeros(num_mixtures, per_mixture)
        for mixture, cell in enumerate(initial_cells):
            assignment[mixture, cell] = 1.0
        self.register_buffer("assignment", assignment)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, hidden) -> (B * mixtures, n + 1) logits in warehouse cell order."""
        logits = self.fc2(hidden)
        if self.num_basis is None:
            return logits.reshape(-1, self.num_cells + 1)
        per_mixture = logits.reshape(-1, self.num_local_cells + self.num_basis + 1)
        local = per_mixture[:, : self.num_local_cells]
        nonlocal_cells = self.fc3(per_mixture[:, self.num_local_cells : -1])
        zero = per_mixture[:, -1:]
        # The layer's own cells sit at [start_cell, start_cell + local) of the warehouse.
        ordered = torch.cat(
            [nonlocal_cells[:, : self.start_cell], local, nonlocal_cells[:, self.start_cell :], zero], dim=1
        )
        return (ordered.reshape(-1, self.num_mixtures * (self.num_cells + 1)) + self.basis_bias).reshape(
            -1, self.num_cells + 1
        )

    def forward(self, x: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
        """Mixing weights (B * mixtures, n), mixture-major within each sample."""
        pooled = x.mean(dim=tuple(range(2, x.dim())))
        z = self._logits(self.act(self.norm(self.fc1(pooled))))
        z = z / (z.abs().sum(dim=1, keepdim=True) + 1e-3)
        batch = x.shape[0]
        z = (1.0 - temperature) * z.view(batch, self.num_mixtures, -1) + temperature * self.assignment
        return z.reshape(batch * self.num_mixtures, -1)[:, :-1]
