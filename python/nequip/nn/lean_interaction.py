"""The interaction block with its message passing done by :class:`TensorProductScatter`.

``LeanInteractionBlock`` is ``InteractionBlock`` with the same parameters, buffers and
``state_dict`` keys; only ``forward`` differs, and computes the same function.
``use_lean_message_passing(model)`` switches every interaction block of a built model over in
place (for benchmarks and for comparing the two on the same weights).
"""

import torch

from .interaction import InteractionBlock
from .tensor_product_scatter import TensorProductScatter


class LeanInteractionBlock(InteractionBlock):
    """InteractionBlock whose tensor product and neighbour sum run in one TensorProductScatter."""

    def forward(
        self,
        node_features: torch.Tensor,
        node_attrs: torch.Tensor,
        edge_sh: torch.Tensor,
        edge_radial: torch.Tensor,
        edge_center: torch.Tensor,
        edge_neighbor: torch.Tensor,
    ) -> torch.Tensor:
        self_connection = self.self_connection(node_features, node_attrs)
        x = self.linear_1(node_features)
        weights = self.radial_mlp(edge_radial)
        x = self.tp_scatter(x, edge_sh, weights, edge_center, edge_neighbor)
        x = self.linear_2(x * self.inv_sqrt_avg_num_neighbors)
        return x + self_connection


def use_lean_message_passing(model: torch.nn.Module) -> torch.nn.Module:
    """Switch every InteractionBlock in ``model`` to LeanInteractionBlock, in place; returns ``model``."""
    for module in model.modules():
        if type(module) is InteractionBlock:
            tp = module.tensor_product
            scatter = TensorProductScatter(tp)
            buffer = next(iter(tp.buffers()), None)
            if buffer is not None:
                scatter.to(device=buffer.device, dtype=buffer.dtype)
            module.tp_scatter = scatter
            module.__class__ = LeanInteractionBlock
    return model
