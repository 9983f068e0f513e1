"""PRE: the prompt fed to the text encoder is E(ctx) + ctx."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from prompt_learning import FrozenCLIP
from prompt_learning.methods import create_method

from ..conftest import CLASSES


def lstm_by_hand(lstm: torch.nn.LSTM, x: torch.Tensor) -> torch.Tensor:
    """A one-layer bidirectional LSTM over (M, W) written out with PyTorch's gate order (i, f, g, o)."""
    def direction(suffix: str, seq: torch.Tensor) -> torch.Tensor:
        w_ih, w_hh = getattr(lstm, f"weight_ih_l0{suffix}"), getattr(lstm, f"weight_hh_l0{suffix}")
        b = getattr(lstm, f"bias_ih_l0{suffix}") + getattr(lstm, f"bias_hh_l0{suffix}")
        h = torch.zeros(lstm.hidden_size)
        c = torch.zeros(lstm.hidden_size)
        outs = []
        for token in seq:
            i, f, g, o = (w_ih @ token + w_hh @ h + b).chunk(4)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outs.append(h)
        return torch.stack(outs)

    forward = direction("", x)
    backward = direction("_reverse", x.flip(0)).flip(0)
    return torch.cat([forward, backward], dim=-1)  # (M, W)


def test_context_is_reparameterised_with_a_residual(tiny_backbone: FrozenCLIP) -> None:
    torch.manual_seed(0)
    method = create_method({"name": "pre"}, tiny_backbone, CLASSES)
    ctx = method.context.ctx
    expected = lstm_by_hand(method.encoder.net, ctx) + ctx  # (M, W)
    got = method.class_context(len(CLASSES))
    assert got.shape == (len(CLASSES), 4, tiny_backbone.text_width)
    torch.testing.assert_close(got[0], expected, atol=1e-5, rtol=1e-5)
    # what reaches the text encoder: "[SOT] E(ctx)+ctx <name> . [EOT]"
    ids = tiny_backbone.tokenize([f"a photo of a {n}." for n in CLASSES.names])
    embeds = tiny_backbone.token_embeddings(ids).clone()
    embeds[:, 1:5] = expected
    text = F.normalize(tiny_backbone.encode_text_embeddings(embeds, ids.argmax(-1)), dim=-1)
    torch.testing.assert_close(method.encode_classes(CLASSES), text, atol=1e-5, rtol=1e-5)


def test_mlp_encoder_and_no_residual(tiny_backbone: FrozenCLIP) -> None:
    method = create_method({"name": "pre", "encoder": "mlp", "residual": False}, tiny_backbone, CLASSES)
    net, ctx = method.encoder.net, method.context.ctx
    torch.testing.assert_close(method.class_context(1)[0], net[2](torch.relu(net[0](ctx))))
    assert net[0].out_features == 64
