"""FrozenCLIP drives open_clip's own blocks exactly, stays frozen and in eval mode, and loads weights."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from prompt_learning.backbone import FrozenCLIP
from prompt_learning.errors import BackboneWeightsError, ConfigurationError

TEXTS = ["a photo of a red star.", "blue ring", "a centered satellite photo of annual crop land."]


@pytest.mark.parametrize("name", ["tiny_test", "tiny_test_custom_text", "tiny_test_eos"])
def test_text_from_embeddings_equals_encode_text(name: str) -> None:
    torch.manual_seed(0)
    backbone = FrozenCLIP(name)
    ids = backbone.tokenize(TEXTS)
    reference = backbone.model.encode_text(ids)  # open_clip's own path from token ids
    eot = (ids == backbone.eot_token_id).int().argmax(-1)
    ours = backbone.encode_text_embeddings(backbone.token_embeddings(ids), eot)
    assert backbone.text.pool_type == {"tiny_test": "argmax", "tiny_test_custom_text": "last"}.get(name, "eos")
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["tiny_test", "tiny_test_custom_text"])
def test_image_loop_equals_encode_image(name: str) -> None:
    torch.manual_seed(0)
    backbone = FrozenCLIP(name)
    x = torch.randn(2, 3, backbone.image_size, backbone.image_size)
    torch.testing.assert_close(backbone.vision.encode(x), backbone.model.encode_image(x), atol=1e-5, rtol=0)


def test_vision_prompts_get_gradients_and_backbone_none(custom_text_backbone: FrozenCLIP) -> None:
    backbone = custom_text_backbone  # avg-pooled vision tower: prompts must be stripped before pooling
    width = backbone.vision_width
    shallow = nn.Parameter(torch.randn(2, width) * 0.02)
    deep = {1: nn.Parameter(torch.randn(2, width) * 0.02)}
    x = torch.randn(2, 3, backbone.image_size, backbone.image_size)
    out = backbone.encode_image(x, shallow, deep)
    assert out.shape == (2, backbone.embed_dim)
    out.sum().backward()
    assert shallow.grad is not None and deep[1].grad is not None
    assert all(p.grad is None for p in backbone.parameters())
    # Pooling sees only image tokens: a zero-layer prompt that is overwritten at block 1 still changes the
    # result through attention in block 0, but the pooled tensor has the image-token count.
    assert not torch.allclose(out, backbone.model.encode_image(x))


def test_deep_text_prompts_replace_slot_after_sot(tiny_backbone: FrozenCLIP) -> None:
    ids = tiny_backbone.tokenize(["a photo of a red star."])
    emb = tiny_backbone.token_embeddings(ids)
    prompts = nn.Parameter(torch.randn(2, tiny_backbone.text_width))
    out = tiny_backbone.encode_text_embeddings(emb, ids.argmax(-1), {1: prompts})
    out.sum().backward()
    assert prompts.grad is not None and prompts.grad.abs().sum() > 0
    assert not torch.allclose(out, tiny_backbone.model.encode_text(ids))


def test_frozen_and_pinned_in_eval_mode(tiny_backbone: FrozenCLIP) -> None:
    parent = nn.ModuleDict({"backbone": tiny_backbone, "head": nn.Linear(2, 2)})
    parent.train()
    assert parent["head"].training
    assert not any(m.training for m in tiny_backbone.modules())
    assert not any(p.requires_grad for p in tiny_backbone.parameters())


def test_patch_dropout_stays_off_under_parent_train() -> None:
    import open_clip

    backbone = FrozenCLIP("tiny_test")
    backbone.model = open_clip.create_model("tiny_test", force_patch_dropout=0.5).requires_grad_(False)
    nn.ModuleDict({"b": backbone}).train()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(backbone.encode_image(x), backbone.encode_image(x))


def test_widths_and_depths_read_from_model(vit_b16: FrozenCLIP) -> None:
    assert (vit_b16.text_width, vit_b16.vision_width, vit_b16.embed_dim) == (512, 768, 512)
    assert (vit_b16.text_depth, vit_b16.vision_depth, vit_b16.context_length) == (12, 12, 77)


def test_resnet_tower_refuses_vision_prompts() -> None:
    backbone = FrozenCLIP("tiny_test_resnet")
    with pytest.raises(ConfigurationError, match="tiny_test_resnet.*ModifiedResNet"):
        backbone.require_vision("method 'vpt'")
    x = torch.randn(1, 3, 32, 32)
    assert backbone.encode_image(x).shape == (1, 32)  # plain image features still work


def test_missing_weights_fail_fast_with_the_fix() -> None:
    start = time.time()
    with pytest.raises(BackboneWeightsError) as info:
        FrozenCLIP("ViT-B-16", "openai")
    assert time.time() - start < 10
    message = str(info.value)
    assert "'ViT-B-16'" in message and "'openai'" in message and "backbone.pretrained=/path/to/" in message


def test_unknown_tag_and_missing_file_are_named() -> None:
    with pytest.raises(BackboneWeightsError, match="Known tags"):
        FrozenCLIP("ViT-B-16", "no_such_tag")
    with pytest.raises(BackboneWeightsError, match="does not exist"):
        FrozenCLIP("tiny_test", "/nonexistent/weights.safetensors")
    with pytest.raises(ConfigurationError, match="Unknown open_clip model 'ViT-B-99'"):
        FrozenCLIP("ViT-B-99")


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_local_checkpoint_loads(tmp_path, tiny_backbone: FrozenCLIP, suffix: str) -> None:
    state = {k: v.clone().contiguous() for k, v in tiny_backbone.model.state_dict().items()}
    path = tmp_path / f"weights{suffix}"
    save_file(state, path) if suffix == ".safetensors" else torch.save(state, path)
    loaded = FrozenCLIP("tiny_test", str(path))
    for key, value in loaded.model.state_dict().items():
        assert torch.equal(value, state[key]), key
    ident = loaded.identity()
    assert ident["checkpoint"] == path.name and len(ident["checkpoint_sha256"]) == 64  # file name, no directory


def test_quick_gelu_kept_for_local_copies_of_openai_weights(tmp_path, tiny_backbone: FrozenCLIP) -> None:
    from open_clip.transformer import QuickGELU

    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_backbone.model.state_dict().items()}, path)
    activation = lambda b: type(b.model.transformer.resblocks[0].mlp.gelu)  # noqa: E731
    assert activation(FrozenCLIP("tiny_test", str(path))) is not QuickGELU
    forced = FrozenCLIP("tiny_test", str(path), quick_gelu=True)
    assert activation(forced) is QuickGELU and forced.identity()["quick_gelu"] is True


def test_torchscript_archive_loads(tmp_path, tiny_backbone: FrozenCLIP, monkeypatch) -> None:
    """OpenAI's released .pt files are TorchScript archives, which torch.load(weights_only=True) refuses."""
    from prompt_learning.backbone import weights

    monkeypatch.setattr(weights, "CONVERTED_DIR", tmp_path / "converted")
    example = (torch.ones(1, 3, 32, 32), torch.zeros(1, 32, dtype=torch.long))
    traced = torch.jit.trace_module(tiny_backbone.model, {"forward": example}, strict=False, check_trace=False)
    path = tmp_path / "ViT-tiny.pt"
    torch.jit.save(traced, str(path))
    assert weights.is_torchscript_archive(path)
    loaded = FrozenCLIP("tiny_test", str(path))
    for key, value in tiny_backbone.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key
    assert loaded.identity()["checkpoint"] == path.name


def test_transforms_follow_the_model(tiny_backbone: FrozenCLIP) -> None:
    from PIL import Image

    image = Image.new("RGB", (50, 40), (200, 30, 30))
    for kind in ("random_resized_crop", "flip", "none"):
        assert tiny_backbone.train_transform(kind)(image).shape == (3, 32, 32)
    assert tiny_backbone.preprocess_eval(image).shape == (3, 32, 32)
    with pytest.raises(ConfigurationError, match="train_transform='jitter'"):
        tiny_backbone.train_transform("jitter")


def test_checkpoint_of_another_architecture_is_named() -> None:
    from prompt_learning.backbone import TINY_SYNTHETIC_WEIGHTS

    with pytest.raises(BackboneWeightsError, match="does not fit open_clip model 'tiny_test'.*shape"):
        FrozenCLIP("tiny_test", str(TINY_SYNTHETIC_WEIGHTS))


TRUNCATION_CASES = [(n, p) for n in ("coop", "kgcoop", "prograd", "pre") for p in ("end", "middle", "front")] + [
    (n, "end") for n in ("cocoop", "language_deep", "ivlp", "maple", "promptsrc")] + [("coop_csc", "end")]


def _logits_and_grads(method, images, classes) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    method.zero_grad()
    logits = method(images, classes).logits
    logits.square().sum().backward()
    grads = {n: p.grad.clone() for n, p in method.named_parameters() if p.grad is not None}
    return logits.detach(), grads


@pytest.mark.parametrize("name,position", TRUNCATION_CASES)
def test_truncated_and_shared_prefix_text_equal_the_full_context(name: str, position: str, images,
                                                                 custom_text_backbone, monkeypatch) -> None:
    """Tier B (tokens after the last EOT dropped) and Tier C (start token + context encoded once, only the
    class suffixes run) give the 77-token logits and the same gradients for every parameter."""
    from prompt_learning.backbone import towers
    from prompt_learning.backbone.towers import TextTower
    from prompt_learning.methods import create_method
    from prompt_learning.prompts import ClassSet

    monkeypatch.setitem(towers.CALL_OVERHEAD_TOKENS, "cpu", 0)  # three classes: Tier C only pays without overhead
    torch.manual_seed(0)
    backbone = FrozenCLIP("tiny_test")
    classes = ClassSet(("red star", "blue ring", "green cross with a long name"), "a photo of a {}.")
    extra = {"class_token_position": position} if name in ("coop", "kgcoop", "prograd", "pre") else {}
    if name == "coop_csc":
        name, extra = "coop", {"class_specific": True, "n_ctx": 4}
    assert not custom_text_backbone.text.truncatable  # bidirectional, last-token pooling: never truncated
    assert not custom_text_backbone.text.prefix_shareable
    method = create_method({"name": name, **extra}, backbone, classes)
    assert backbone.text.truncatable and backbone.text.prefix_shareable
    tier_c_calls = []
    original = TextTower._encode_shared_prefix
    monkeypatch.setattr(TextTower, "_encode_shared_prefix",
                        lambda self, *a: tier_c_calls.append(a[3]) or original(self, *a))
    shared, shared_grads = _logits_and_grads(method, images, classes)
    backbone.share_text_prefix = False
    truncated, truncated_grads = _logits_and_grads(method, images, classes)
    backbone.truncate_text = False
    full, full_grads = _logits_and_grads(method, images, classes)
    backbone.truncate_text = backbone.share_text_prefix = True
    torch.testing.assert_close(truncated, full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shared, full, atol=1e-5, rtol=1e-5)
    assert shared_grads.keys() == full_grads.keys() and full_grads
    for key, full_grad in full_grads.items():  # fp32 sums in another order: tolerance relative to the largest entry
        atol = 1e-5 * float(full_grad.abs().max())
        torch.testing.assert_close(truncated_grads[key], full_grad, atol=atol, rtol=1e-3, msg=key)
        torch.testing.assert_close(shared_grads[key], full_grad, atol=atol, rtol=1e-3, msg=key)
    # Tier C ran where a prefix longer than the start token is shared: unified context at the end or middle.
    expect_tier_c = position != "front" and not extra.get("class_specific", False)
    assert bool(tier_c_calls) == expect_tier_c, tier_c_calls
    if position == "end" and tier_c_calls:  # start token + every context token (+ the frozen phrase)
        assert min(tier_c_calls) >= 1 + method.class_prompts.n_ctx


def test_frozen_weights_cast_once_keep_prompts_in_fp32(images) -> None:
    """Mixed precision: matmul weights cast to bf16 once; prompts stay fp32 master weights with fp32
    gradients; logits under autocast stay close to the fp32 ones."""
    from prompt_learning.methods import create_method
    from prompt_learning.prompts import ClassSet

    torch.manual_seed(0)
    backbone = FrozenCLIP("tiny_test")
    classes = ClassSet(("red star", "blue ring", "green cross"))
    method = create_method({"name": "maple", "n_ctx": 2}, backbone, classes)
    reference = method(images, classes).logits
    backbone.cast_frozen_weights(torch.bfloat16)
    text_block = backbone.text.transformer.resblocks[0]
    assert text_block.attn.in_proj_weight.dtype == text_block.mlp.c_fc.weight.dtype == torch.bfloat16
    assert backbone.model.visual.conv1.weight.dtype == torch.bfloat16
    assert backbone.text.ln_final.weight.dtype == backbone.model.logit_scale.dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = method(images, classes).logits
    logits.float().sum().backward()
    trainable = [p for p in method.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 and p.grad is not None and p.grad.dtype == torch.float32
                             for p in trainable)
    assert (logits.float() - reference).abs().max() < 0.05 * reference.abs().max()


def test_length_buckets_cover_every_row_once_and_trade_padding_for_calls() -> None:
    from prompt_learning.backbone.towers import length_buckets

    lengths = torch.tensor([3, 9, 3, 4, 9, 2, 14])
    exact = length_buckets(lengths, overhead=0)  # no cost per call: one bucket per distinct length
    assert [n for _, n in exact] == [2, 3, 4, 9, 14]
    merged = length_buckets(lengths, overhead=1000)  # calls cost more than any padding: one bucket
    assert [(rows.tolist(), n) for rows, n in merged] == [(list(range(7)), 14)]
    for buckets in (exact, length_buckets(lengths, overhead=6)):
        rows = torch.cat([r for r, _ in buckets])
        assert sorted(rows.tolist()) == list(range(7))
        assert all(int(lengths[r].max()) == n for r, n in buckets)


def test_tier_c_is_refused_where_its_calls_cost_more_than_the_tokens_saved(monkeypatch) -> None:
    from prompt_learning.backbone import towers
    from prompt_learning.methods import create_method
    from prompt_learning.prompts import ClassSet

    backbone = FrozenCLIP("tiny_test")
    classes = ClassSet(("red star", "blue ring"))
    method = create_method({"name": "coop", "n_ctx": 4}, backbone, classes)
    calls = []
    original = towers.TextTower._encode_shared_prefix
    monkeypatch.setattr(towers.TextTower, "_encode_shared_prefix", lambda self, *a: calls.append(1) or original(self, *a))
    monkeypatch.setitem(towers.CALL_OVERHEAD_TOKENS, "cpu", 10_000)
    method.encode_classes(classes)
    assert not calls  # two short prompts: the prefix pass costs more than it saves
    monkeypatch.setitem(towers.CALL_OVERHEAD_TOKENS, "cpu", 0)
    method.encode_classes(classes)
    assert calls == [1]


@pytest.mark.parametrize("name,extra,loops", [
    ("maple", {"n_ctx": 2}, {"tier_c_prefix", "tier_c_suffix", "run_blocks"}),  # text Tier C, prompted image tower
    ("coop", {"class_token_position": "front"}, {"run_blocks", "plain_image"}),  # text Tier B, open_clip's encoder
    ("cocoop", {}, {"tier_c_prefix", "tier_c_suffix", "plain_image"})])
def test_compiled_towers_capture_graphs_and_give_the_eager_numbers(name: str, extra: dict, loops: set[str], images,
                                                                   monkeypatch) -> None:
    """``compile_towers``: Dynamo captures the block loops (text Tier B / Tier C, the prompted vision tower)
    as graphs, and logits and every trainable gradient equal the eager path."""
    import torch._dynamo

    from prompt_learning.backbone import towers
    from prompt_learning.methods import create_method
    from prompt_learning.prompts import ClassSet

    monkeypatch.setitem(towers.CALL_OVERHEAD_TOKENS, "cpu", 0)  # Tier C for three classes
    torch.manual_seed(0)
    backbone = FrozenCLIP("tiny_test")
    classes = ClassSet(("red star", "blue ring", "green cross with a long name"), "a photo of a {}.")
    method = create_method({"name": name, **extra}, backbone, classes)
    eager, eager_grads = _logits_and_grads(method, images, classes)
    captured: list[str] = []

    def recording_backend(graph_module, example_inputs):  # runs the captured graph as traced
        inputs = graph_module.code.split(")", 1)[0]  # the graph's signature names what it was traced from
        captured.append(next((loop for key, loop in (("L_suffix_", "tier_c_suffix"), ("L_prefix_", "tier_c_prefix"),
                                                     ("L_x_", "run_blocks"), ("L_self_", "plain_image"))
                              if key in inputs), inputs))
        return graph_module.forward

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    try:
        backbone.compile_towers("default", backend=recording_backend)
        compiled, compiled_grads = _logits_and_grads(method, images, classes)
        breaks = dict(torch._dynamo.utils.counters["graph_break"])
    finally:
        torch._dynamo.reset()
    assert set(captured) == loops
    assert breaks == {}  # one graph per loop: a break would split a CUDA graph and leave its ops eager
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=1e-5)
    assert compiled_grads.keys() == eager_grads.keys() and eager_grads
    for key, grad in eager_grads.items():
        torch.testing.assert_close(compiled_grads[key], grad, atol=1e-5 * float(grad.abs().max()), rtol=1e-3, msg=key)


def test_compile_mode_is_checked_before_anything_is_built(run_cfg, monkeypatch) -> None:
    from prompt_learning.engine.run import compile_mode
    from prompt_learning.errors import ConfigurationError

    assert compile_mode(run_cfg()) is None
    assert compile_mode(run_cfg("trainer.compile=true")) == "default"
    assert compile_mode(run_cfg("trainer.compile=reduce-overhead")) == "reduce-overhead"
    with pytest.raises(ConfigurationError, match="trainer.compile='fastest'.*reduce-overhead"):
        compile_mode(run_cfg("trainer.compile=fastest"))
    with pytest.raises(ConfigurationError, match="trainer.compile_backend='nope'.*inductor"):
        compile_mode(run_cfg("trainer.compile=default", "trainer.compile_backend=nope"))
    monkeypatch.setattr("shutil.which", lambda name: None)  # no C++ compiler on this machine
    with pytest.raises(ConfigurationError, match="needs a C\\+\\+ compiler"):
        compile_mode(run_cfg("trainer.compile=default", "trainer=cpu"))
    assert compile_mode(run_cfg("trainer.compile=default", "trainer.compile_backend=aot_eager")) == "default"


def test_compile_is_how_a_run_runs_not_what_it_computes(run_cfg) -> None:
    """Switching compile on or off keeps the run's fingerprint: a compiled run resumes eagerly and is skipped as
    done by a sweep that already ran it, and the fingerprints of runs made before the option existed hold."""
    from prompt_learning.engine.run import computed_settings, run_fingerprint

    plain, compiled = (computed_settings(run_cfg(*o)) for o in ((), ("trainer.compile=reduce-overhead",)))
    assert not any("compile" in k for k in plain) and run_fingerprint(plain) == run_fingerprint(compiled)


@pytest.mark.slow
def test_training_with_inductor_compiled_towers_matches_eager(run_cfg, tmp_path) -> None:
    """The real thing on a CPU: CoOp trained with ``trainer.compile=default`` (inductor, C++ kernels) reaches
    the eager run's accuracy and nearly the same prompts."""
    import torch._dynamo
    from safetensors.torch import load_file

    from prompt_learning.engine.run import train_and_test

    eager = train_and_test(run_cfg(f"paths.output_dir={tmp_path / 'eager'}", "trainer=cpu"))
    torch._dynamo.reset()
    try:
        fast = train_and_test(run_cfg(f"paths.output_dir={tmp_path / 'compiled'}", "trainer=cpu",
                                      "trainer.compile=default"))
    finally:
        torch._dynamo.reset()
    assert {k: m["acc"] for k, m in fast["metrics"].items()} == {k: m["acc"] for k, m in eager["metrics"].items()}
    for name, m in eager["metrics"].items():  # ECE (%) and NLL of nearly the same prompts
        assert fast["metrics"][name] == pytest.approx(m, abs=1e-3)
    a, b = (load_file(Path(r["config"]["paths"]["run_dir"]) / "export" / "prompts.safetensors") for r in (eager, fast))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)


def test_attention_block_equals_open_clips_block_from_fewer_operators(tiny_backbone: FrozenCLIP) -> None:
    """``attention_block``: open_clip's block output and input gradient (causal text mask and unmasked image
    tokens), dispatching well under the operators of ``nn.MultiheadAttention``'s general path."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from prompt_learning.backbone.towers import attention_block

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.n += 1
            return func(*args, **(kwargs or {}))

    def run(fn, x):
        x = x.clone().requires_grad_(True)
        Count.n = 0
        with Count():
            out = fn(x)
            out.square().sum().backward()
        return out.detach(), x.grad, Count.n

    torch.manual_seed(0)
    text_block = tiny_backbone.text.transformer.resblocks[0]
    image_block = tiny_backbone.model.visual.transformer.resblocks[0]
    mask = tiny_backbone.text.attn_mask[:9, :9]
    for block, x, m in ((text_block, torch.randn(3, 9, tiny_backbone.text_width), mask),
                        (image_block, torch.randn(2, 5, tiny_backbone.vision_width), None)):
        ref_out, ref_grad, ref_ops = run(lambda t, b=block, m=m: b(t, attn_mask=m), x)
        out, grad, ops = run(lambda t, b=block, m=m: attention_block(b, t, m), x)
        torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(grad, ref_grad, atol=1e-5, rtol=1e-4)
        assert ops < 0.75 * ref_ops, (ops, ref_ops)
    causal_out, causal_grad, _ = run(lambda t: attention_block(text_block, t, None, causal=True), x := torch.randn(
        3, 9, tiny_backbone.text_width))
    masked_out, masked_grad, _ = run(lambda t: attention_block(text_block, t, mask), x)
    torch.testing.assert_close(causal_out, masked_out, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(causal_grad, masked_grad, atol=1e-6, rtol=1e-5)


def test_causal_masks_are_recognised(tiny_backbone: FrozenCLIP, custom_text_backbone: FrozenCLIP,
                                     vit_b16: FrozenCLIP) -> None:
    """The text towers' own masks (and their truncations) count as causal; anything else keeps the mask."""
    from prompt_learning.backbone.towers import is_causal_mask

    for backbone in (tiny_backbone, vit_b16):
        assert backbone.text.causal and is_causal_mask(backbone.text.attn_mask[:7, :7])
    assert not custom_text_backbone.text.causal  # a bidirectional tower (no mask, last-token pooling)
    causal = torch.full((5, 5), float("-inf")).triu(1)
    assert not is_causal_mask(None) and not is_causal_mask(causal[:4])  # absent, or not square
    assert not is_causal_mask(causal.T) and not is_causal_mask(torch.zeros(5, 5))  # anti-causal, bidirectional
    padded = causal.clone()
    padded[:, 4] = float("-inf")  # a key masked for every query (padding) is not the causal pattern
    assert not is_causal_mask(padded)


def test_lean_blocks_switch_both_towers(tiny_backbone: FrozenCLIP, monkeypatch) -> None:
    from prompt_learning.backbone import towers

    calls = []
    original = towers.attention_block
    monkeypatch.setattr(towers, "attention_block", lambda *a: calls.append(1) or original(*a))
    x = torch.randn(1, 3, tiny_backbone.image_size, tiny_backbone.image_size)
    prompts = torch.zeros(2, tiny_backbone.vision_width)
    ids = tiny_backbone.tokenize(TEXTS)
    eot = (ids == tiny_backbone.eot_token_id).int().argmax(-1)
    try:
        tiny_backbone.lean_blocks = False  # the official path: nn.MultiheadAttention in every block
        assert not tiny_backbone.lean_blocks
        off = (tiny_backbone.encode_image(x, prompts),
               tiny_backbone.encode_text_embeddings(tiny_backbone.token_embeddings(ids), eot))
        assert not calls
    finally:
        tiny_backbone.lean_blocks = True
    on = (tiny_backbone.encode_image(x, prompts),
          tiny_backbone.encode_text_embeddings(tiny_backbone.token_embeddings(ids), eot))
    assert tiny_backbone.lean_blocks and len(calls) == tiny_backbone.vision_depth + tiny_backbone.text_depth
    for a, b in zip(on, off, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_loaded_checkpoints_are_not_reported_as_random(caplog) -> None:
    """open_clip's "initialized randomly" notice is true for pretrained=None and must not appear when a
    checkpoint file is loaded (the shapes-only model that checks the file used to trigger it)."""
    with caplog.at_level("WARNING"):
        FrozenCLIP("tiny_synthetic", "packaged")
    assert not [r for r in caplog.records if "initialized randomly" in r.getMessage()]
    with caplog.at_level("WARNING"):
        FrozenCLIP("tiny_test")
    assert [r for r in caplog.records if "initialized randomly" in r.getMessage()]
