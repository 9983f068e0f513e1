"""GOPro's prompt generator (Singha et al., "GOPro: Generate and Optimize Prompts in CLIP using Self-Supervised
Learning", BMVC 2023): one context shift per image from the style and content of every frozen vision block.

For the output h_l (B, L, W_v) of vision block l = 1..J (``FrozenCLIP.encode_image_with_hidden_states``):

* token statistics (:func:`token_statistics`): mu_l = (1/L) sum_t h_l[t] and
  sigma_l = sqrt((sum_t (h_l[t] - mu_l)^2 + eps) / L), eps = 2.3e-8 (the official ``AdaIN_trans``; the same as
  sqrt(token-mean((h - mu)^2) + eps / L));
* style_l = W^s_l (mu_l + sigma_l) / 2 + b^s_l (the official average pooling of the two rows [mu; sigma]) and
  content_l = W^c_l mu_l + b^c_l, each layer its own Linear(W_v -> W_t);
* m_l = (style_l + content_l) / 2, and the shift v = sum_l rho_l m_l + rho_0, the layer mixer rho = Linear(J -> 1),
  its bias rho_0 added to every coordinate. The method adds v to each of its context vectors.

The widths are read from the backbone (the official code fixes W_v = 768, J = 12).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

SIGMA_EPS = 2.3e-8  # the official AdaIN_trans constant


def token_statistics(hidden: Tensor, eps: float = SIGMA_EPS) -> tuple[Tensor, Tensor]:
    """(B, L, W) one block's output -> (mu, sigma), each (B, W), over the L tokens, in float32."""
    h = hidden.float()  # (B, L, W)
    mu = h.mean(dim=1)  # (B, W)
    sigma = (((h - mu.unsqueeze(1)) ** 2).sum(dim=1) + eps).div(h.shape[1]).sqrt()  # (B, W)
    return mu, sigma


class StyleContentShift(nn.Module):
    """Per-layer style and content projectors and the layer mixer: J x (mu_l, sigma_l) -> (B, W_t) shift v."""

    def __init__(self, depth: int, vision_width: int, text_width: int) -> None:
        super().__init__()
        self.style = nn.ModuleList(nn.Linear(vision_width, text_width) for _ in range(depth))
        self.content = nn.ModuleList(nn.Linear(vision_width, text_width) for _ in range(depth))
        self.mixer = nn.Linear(depth, 1)  # rho_1..rho_J and rho_0

    def layer_features(self, statistics: list[tuple[Tensor, Tensor]]) -> Tensor:
        """J x ((B, W_v), (B, W_v)) -> (B, J, W_t) the mixed style/content features m_l."""
        if len(statistics) != len(self.style):
            raise ValueError(f"{len(statistics)} layers of statistics for a generator of {len(self.style)} layers")
        dtype = self.mixer.weight.dtype
        mixed = []
        for style, content, (mu, sigma) in zip(self.style, self.content, statistics, strict=True):
            mu, sigma = mu.to(dtype), sigma.to(dtype)
            mixed.append((style((mu + sigma) / 2) + content(mu)) / 2)  # (B, W_t)
        return torch.stack(mixed, dim=1)  # (B, J, W_t)

    def forward(self, statistics: list[tuple[Tensor, Tensor]]) -> Tensor:
        """J x ((B, W_v), (B, W_v)) -> (B, W_t): v = sum_l rho_l m_l + rho_0."""
        return self.mixer(self.layer_features(statistics).transpose(1, 2)).squeeze(-1)  # (B, W_t)
