"""CoCoOp's Meta-Net (Zhou et al. CVPR 2022, Eq. 4: v_m(x) = v_m + pi, pi = h_theta(x)).

A two-layer bottleneck ``Linear(D -> D/16) -> ReLU -> Linear(D/16 -> W)`` maps the normalised image
feature (D = the joint embedding size, 512 for ViT-B/16) to one shift pi of the text width W that is
added to every context vector.
"""

from __future__ import annotations

from torch import Tensor, nn


class MetaNet(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, in_dim // reduction)
        self.linear1 = nn.Linear(in_dim, hidden)
        self.relu = nn.ReLU()
        self.linear2 = nn.Linear(hidden, out_dim)

    def forward(self, image_features: Tensor) -> Tensor:
        """(B, D) -> (B, W) context shift pi."""
        return self.linear2(self.relu(self.linear1(image_features)))
