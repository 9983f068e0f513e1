"""CoOp's assembled prompt sequences match hand-built token sequences for every class position."""

from __future__ import annotations

import pytest
import torch

from prompt_learning.errors import ConfigurationError
from prompt_learning.methods import create_method
from prompt_learning.prompts import ClassSet
from prompt_learning.prompts.assembly import context_layout

from .conftest import CLASSES


def hand_built(backbone, name: str, ctx: torch.Tensor, position: str) -> tuple[torch.Tensor, int]:
    """[SOT] + ctx/name arrangement + [.] [EOT] + padding, from raw BPE ids of the pieces."""
    tokenizer = backbone.tokenizer
    name_ids = tokenizer.encode(name)
    dot_ids = tokenizer.encode(".")
    sot, eot = tokenizer.sot_token_id, tokenizer.eot_token_id
    embed = lambda ids: backbone.token_embeddings(torch.tensor(ids))  # noqa: E731
    m, half = ctx.shape[0], ctx.shape[0] // 2
    pieces = {"end": [ctx, embed(name_ids)], "front": [embed(name_ids), ctx],
              "middle": [ctx[:half], embed(name_ids), ctx[half:]]}[position]
    seq = torch.cat([embed([sot]), *pieces, embed(dot_ids + [eot])])
    length = backbone.context_length
    pad = embed([0] * (length - seq.shape[0]))
    return torch.cat([seq, pad]), 1 + m + len(name_ids) + len(dot_ids)


@pytest.mark.parametrize("position", ["end", "middle", "front"])
def test_assembled_sequence_matches_hand_built(tiny_backbone, position: str) -> None:
    method = create_method({"name": "coop", "n_ctx": 5, "class_token_position": position}, tiny_backbone, CLASSES)
    embeds, eot = method.prompt_embeddings(CLASSES)
    assert embeds.shape == (len(CLASSES), tiny_backbone.context_length, tiny_backbone.text_width)
    for c, name in enumerate(CLASSES.names):
        expected, expected_eot = hand_built(tiny_backbone, name, method.context.ctx.detach(), position)
        torch.testing.assert_close(embeds[c], expected, atol=0, rtol=0)
        assert int(eot[c]) == expected_eot


def test_eot_position_follows_the_token_ids(tiny_backbone) -> None:
    """Applying the layout to the placeholder ids puts the EOT id exactly at the reported position."""
    method = create_method({"name": "coop", "n_ctx": 3, "class_token_position": "middle"}, tiny_backbone, CLASSES)
    _, eot = method.prompt_embeddings(CLASSES)
    ids = tiny_backbone.tokenize([f"{n}." for n in CLASSES.names])
    name_lens = torch.tensor([len(tiny_backbone.tokenizer.encode(n)) for n in CLASSES.names])
    layout = context_layout(name_lens, 3, ids.shape[1], "middle")
    source = torch.cat([ids[:, :1], torch.full((len(CLASSES), 3), -1), ids[:, 1 : ids.shape[1] - 3]], dim=1)
    arranged = torch.gather(source, 1, layout)
    assert torch.equal(arranged.argmax(-1), eot)
    assert torch.equal((arranged == -1).sum(-1), torch.full((len(CLASSES),), 3))


def test_unified_vs_class_specific_shapes(tiny_backbone) -> None:
    unified = create_method({"name": "coop", "n_ctx": 4}, tiny_backbone, CLASSES)
    csc = create_method({"name": "coop", "n_ctx": 4, "class_specific": True}, tiny_backbone, CLASSES)
    width = tiny_backbone.text_width
    assert unified.context.ctx.shape == (4, width)
    assert csc.context.ctx.shape == (len(CLASSES), 4, width)
    assert csc.supports_unseen_classes is False and unified.supports_unseen_classes is True
    assert unified.encode_classes(CLASSES).shape == csc.encode_classes(CLASSES).shape


def test_text_init_sets_n_ctx_and_values(tiny_backbone) -> None:
    method = create_method({"name": "coop", "n_ctx": 16, "ctx_init": "a photo of a", "class_specific": True},
                           tiny_backbone, CLASSES)
    ids = tiny_backbone.tokenizer.encode("a photo of a")
    assert method.n_ctx == 4 and method.context.ctx.shape == (4, tiny_backbone.text_width)  # CSC ignored
    assert (method.cfg.n_ctx, method.cfg.class_specific) == (4, False)  # what is recorded is what was trained
    torch.testing.assert_close(method.context.ctx.detach(), tiny_backbone.token_embeddings(torch.tensor(ids)))


def test_random_init_std(tiny_backbone) -> None:
    torch.manual_seed(0)
    method = create_method({"name": "coop", "n_ctx": 16, "class_specific": True}, tiny_backbone,
                           ClassSet(tuple(f"c{i}" for i in range(50))))
    assert abs(method.context.ctx.std().item() - 0.02) < 0.001


def test_prompt_too_long_is_named(tiny_backbone) -> None:
    long_name = " ".join(["tessellated"] * 12)
    method = create_method({"name": "coop", "n_ctx": 16}, tiny_backbone, ClassSet((long_name,)))
    with pytest.raises(ConfigurationError, match="tessellated.*context length 32"):
        method.encode_classes(ClassSet((long_name,)))


def test_bad_position_is_refused(tiny_backbone) -> None:
    with pytest.raises(ConfigurationError, match="class_token_position='middel'"):
        create_method({"name": "coop", "class_token_position": "middel"}, tiny_backbone, CLASSES)


def test_coop_parameter_counts_on_vit_b16(vit_b16) -> None:
    """ViT-B/16 counts (docs/methods/coop.md): 2,048 for M=4 ("a photo of a"), 8,192 for M=16."""
    m4 = create_method({"name": "coop", "ctx_init": "a photo of a"}, vit_b16, CLASSES)
    m16 = create_method({"name": "coop", "n_ctx": 16}, vit_b16, CLASSES)
    assert sum(p.numel() for p in m4.parameters() if p.requires_grad) == 2048
    assert sum(p.numel() for p in m16.parameters() if p.requires_grad) == 8192


def test_coop_on_an_eos_pooled_tower_matches_plain_text_at_init() -> None:
    """With text init and the class at the end, CoOp's prompt is "a photo of a {name}." token for token,
    so before training its class features equal open_clip's encode_text of that sentence."""
    from prompt_learning.backbone import FrozenCLIP

    torch.manual_seed(0)
    backbone = FrozenCLIP("tiny_test_eos")
    method = create_method({"name": "coop", "ctx_init": "a photo of a"}, backbone, CLASSES)
    expected = backbone.model.encode_text(backbone.tokenize([f"a photo of a {n}." for n in CLASSES.names]))
    torch.testing.assert_close(method.encode_classes(CLASSES), torch.nn.functional.normalize(expected, dim=-1))


def test_tokenizer_without_start_token_is_refused() -> None:
    from prompt_learning.prompts.assembly import tokenize_classes

    def no_sot(texts):
        return torch.tensor([[len(t), 7, 0] for t in texts])  # first id differs per text: no start token

    with pytest.raises(ConfigurationError, match="start-of-text"):
        tokenize_classes(no_sot, ["cat", "tabby cat"], eot_id=7)
