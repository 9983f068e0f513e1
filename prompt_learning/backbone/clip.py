"""FrozenCLIP: any open_clip model, frozen and pinned in eval mode, driven from token embeddings.

Methods hand this wrapper tensors (context embeddings, per-layer prompts) and get features back:

* ``encode_text_embeddings(E, eot, deep)``: E is (N, L, W) token embeddings; features are pooled at
  the model's own pool position (EOT for argmax/eos towers, last/first token otherwise).
* ``encode_image(x, vision_prompts, deep)``: optional prompt tokens appended before ``ln_pre``.

Widths, depths, context length, logit scale and preprocessing are read from the loaded model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prompt_learning.backbone.capabilities import require, text_tower_problem, vision_tower_problem
from prompt_learning.backbone.tiny import register_tiny_models
from prompt_learning.backbone.towers import DeepPrompts, TextTower, VisionTower, compiled
from prompt_learning.backbone.transforms import build_train_transform
from prompt_learning.backbone.weights import ResolvedWeights, check_checkpoint_fits, resolve_pretrained
from prompt_learning.errors import BackboneWeightsError, ConfigurationError

log = logging.getLogger(__name__)


def _model_config(model_name: str) -> dict[str, Any]:
    cfg = open_clip.get_model_config(model_name)
    if cfg is None:
        known = ", ".join(open_clip.list_models()[:12])
        raise ConfigurationError(f"Unknown open_clip model {model_name!r} (backbone.model). "
                                 f"Examples of valid names: {known}, ... (open_clip.list_models()).")
    return cfg


class FrozenCLIP(nn.Module):
    """A frozen open_clip model plus what prompt methods need to drive it.

    Args:
        model_name: open_clip architecture name, e.g. ``ViT-B-16`` or ``tiny_test``.
        pretrained: open_clip tag (``openai``), path to a checkpoint file, ``packaged`` (the shipped
            tiny_synthetic weights) or None for random weights.
        precision: open_clip precision for the frozen weights (``fp32``, ``bf16``, ``fp16``).
        quick_gelu: force QuickGELU activations on (True) or leave the architecture's own (False). None:
            on when the pretrained tag was trained with them (OpenAI weights). Set it for a local copy of
            OpenAI weights, whose file cannot say so.
    """

    def __init__(self, model_name: str, pretrained: str | None = None, precision: str = "fp32",
                 cache_dir: str | None = None, quick_gelu: bool | None = None) -> None:
        super().__init__()
        register_tiny_models()
        model_cfg = _model_config(model_name)
        self.weights: ResolvedWeights = resolve_pretrained(model_name, pretrained, cache_dir)
        wanted = self.weights.quick_gelu if quick_gelu is None else quick_gelu
        force_quick_gelu = wanted and not model_cfg.get("quick_gelu", False)
        self.quick_gelu = bool(wanted or model_cfg.get("quick_gelu", False))
        try:
            if self.weights.checkpoint is not None:
                check_checkpoint_fits(self.weights.open_clip_arg, model_name, self.weights.checkpoint)
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=self.weights.open_clip_arg, precision=precision,
                force_quick_gelu=force_quick_gelu, cache_dir=cache_dir)
        except BackboneWeightsError:
            raise
        except Exception as exc:  # download or checkpoint-format failures from open_clip / the hub
            if self.weights.open_clip_arg is None:
                raise
            raise BackboneWeightsError(f"Loading weights {pretrained!r} into open_clip model {model_name!r} failed: "
                                       f"{exc}. Fix backbone.pretrained (a tag or a checkpoint path).") from None
        self.model_name = model_name
        self.model = model.requires_grad_(False).eval()
        self.preprocess_eval = preprocess
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self.text = TextTower(model) if text_tower_problem(model) is None else None
        self.vision = VisionTower(model.visual) if vision_tower_problem(model) is None else None
        self._zero_shot_cache: dict[tuple, Tensor] = {}
        self.truncate_text = True  # run prompted text only up to the last EOT (exact; False: full context)
        self.share_text_prefix = True  # encode a prefix shared by all class prompts once (exact; Tier C)
        self._plain_image_encoder: Callable[[Tensor], Tensor] = self.model.encode_image  # compile_towers swaps it

    def cast_frozen_weights(self, dtype: torch.dtype) -> None:
        """Cast the frozen matmul weights (linear, convolution, attention projections) to ``dtype`` once,
        as open_clip's own low-precision mode does, so that mixed-precision autocast does not re-cast
        them on every call; norms, embeddings and the logit scale stay in fp32."""
        if dtype == self.image_dtype():
            return
        open_clip.model.convert_weights_to_lp(self.model, dtype=dtype)

    @property
    def lean_blocks(self) -> bool:
        """Whether standard blocks run through ``towers.attention_block`` (the same numbers from ~40% fewer
        operators than ``nn.MultiheadAttention``'s general path; on by default, off to time the official path)."""
        return all(t.lean_blocks for t in (self.text, self.vision) if t is not None)

    @lean_blocks.setter
    def lean_blocks(self, on: bool) -> None:
        for tower in (self.text, self.vision):
            if tower is not None:
                tower.lean_blocks = on

    def compile_towers(self, mode: str = "default", backend: str | Callable = "inductor") -> None:
        """Run both towers' block loops under ``torch.compile`` (the same computation; compiled lazily at the
        first call of each input shape). ``mode``: default | reduce-overhead (CUDA graphs, for the many
        small kernels of few-shot steps on a GPU) | max-autotune | max-autotune-no-cudagraphs. The unprompted
        image encoder (open_clip's ``encode_image``, any tower type) is compiled whole."""
        for tower in (self.text, self.vision):
            if tower is not None:
                tower.compile_passes(mode, backend)
        self._plain_image_encoder = compiled(self.model.encode_image, mode, backend)

    # -- pinned eval mode (docs/architecture.md: a parent's .train() must not enable dropout / BN updates) --
    def train(self, mode: bool = True) -> FrozenCLIP:
        return super().train(False)

    # -- facts read from the model ---------------------------------------------------------------
    @property
    def preprocess_cfg(self) -> dict[str, Any]:
        return dict(open_clip.get_model_preprocess_cfg(self.model))

    def train_transform(self, kind: str = "random_resized_crop") -> Callable:
        """Training preprocess at this model's resolution and normalisation (see ``backbone.transforms``)."""
        return build_train_transform(kind, self.preprocess_cfg, self.preprocess_eval)

    @property
    def image_size(self) -> int:
        size = self.preprocess_cfg["size"]
        return int(size[0] if isinstance(size, (tuple, list)) else size)

    @property
    def embed_dim(self) -> int:
        return int(self.model.visual.output_dim)

    @property
    def text_width(self) -> int:
        return self.require_text("text width").width

    @property
    def text_depth(self) -> int:
        return self.require_text("text depth").depth

    @property
    def vision_width(self) -> int:
        return self.require_vision("vision width").width

    @property
    def vision_depth(self) -> int:
        return self.require_vision("vision depth").depth

    @property
    def context_length(self) -> int:
        return self.require_text("context length").context_length

    @property
    def logit_scale(self) -> Tensor:
        return self.model.logit_scale.detach().exp()

    @property
    def logit_bias(self) -> Tensor | None:
        bias = getattr(self.model, "logit_bias", None)
        return None if bias is None else bias.detach()

    @property
    def device(self) -> torch.device:
        return self.model.logit_scale.device

    def identity(self) -> dict[str, Any]:
        """What identifies these frozen weights in results.json and exports, wherever they were loaded from:
        ``pretrained`` is the open_clip tag (``packaged`` for the shipped tiny CLIP); a checkpoint file is
        named by its file name (``checkpoint``, no directory) and ``checkpoint_sha256``."""
        ident: dict[str, Any] = {"model_name": self.model_name, "pretrained": self.weights.tag,
                                 "checkpoint": self.weights.checkpoint_name,
                                 "checkpoint_sha256": self.weights.checkpoint_sha256,
                                 "open_clip_version": open_clip.__version__, "embed_dim": self.embed_dim,
                                 "quick_gelu": self.quick_gelu}
        if self.text is not None:
            ident.update(text_width=self.text.width, text_depth=self.text.depth)
        if self.vision is not None:
            ident.update(vision_width=self.vision.width, vision_depth=self.vision.depth)
        return ident

    def require_text(self, what: str) -> TextTower:
        require(text_tower_problem(self.model), what, self.model_name, "Choose a backbone with an open_clip text "
                "transformer (e.g. ViT-B-16) or a method that does not prompt the text tower.")
        assert self.text is not None
        return self.text

    def require_vision(self, what: str, alternatives: Sequence[str] = ("zeroshot", "coop")) -> VisionTower:
        require(vision_tower_problem(self.model), what, self.model_name, "Choose a ViT backbone (e.g. "
                f"backbone=vit_b16) or a method that leaves the image tower alone ({', '.join(alternatives)}).")
        assert self.vision is not None
        return self.vision

    # -- text ------------------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> Tensor:
        """(N,) strings -> (N, L) token ids on the backbone's device."""
        return self.tokenizer(list(texts)).to(self.device)

    @property
    def eot_token_id(self) -> int | None:
        """Id of the token the text feature is pooled at: the tower's ``eos_id`` for eos-pooled towers,
        else the tokenizer's end-of-text id (CLIP BPE: 49407; None = argmax of the ids)."""
        text = self.require_text("end-of-text token")
        if text.pool_type == "eos":
            return text.eos_id
        return getattr(self.tokenizer, "eot_token_id", None)

    @property
    def sot_token_id(self) -> int | None:
        """Start-of-text id that begins every sequence (CLIP BPE: 49406), when the tokenizer declares one."""
        return getattr(self.tokenizer, "sot_token_id", None)

    def token_embeddings(self, token_ids: Tensor) -> Tensor:
        """(N, L) ids -> (N, L, W) frozen input embeddings."""
        return self.require_text("token embeddings").token_embedding(token_ids)

    def encode_text_embeddings(self, token_embeddings: Tensor, eot_positions: Tensor,
                               text_prompts: DeepPrompts | None = None, shared_prefix: int = 0,
                               groups: int = 1) -> Tensor:
        """(N, L, W) embeddings + (N,) EOT positions (+ deep prompts per layer) -> (N, D) features.

        The text tower runs only up to the batch's last EOT where that is exact (``truncate_text``), and
        a prefix of ``shared_prefix`` tokens common to each of ``groups`` blocks of rows is encoded once
        per group where that is exact (``share_text_prefix``; see ``TextTower.encode``)."""
        return self.require_text("text prompts").encode(
            token_embeddings, eot_positions, text_prompts, truncate=self.truncate_text,
            shared_prefix=shared_prefix if self.share_text_prefix else 0, groups=groups)

    def encode_text(self, texts: Sequence[str]) -> Tensor:
        """Plain text -> (N, D) features through open_clip's own ``encode_text``."""
        return self.model.encode_text(self.tokenize(texts))

    @torch.no_grad()
    def zero_shot_text_features(self, classnames: Sequence[str], templates: Sequence[str],
                                normalize_each: bool = True) -> Tensor:
        """(C, D) normalised class features averaged over templates (CLIP's prompt ensembling),
        cached per (class set, templates, device, autocast): the frozen teacher shared by every method.

        ``normalize_each=False`` averages the raw per-template features before normalising
        (PromptSRC's frozen text target, docs/methods/promptsrc.md)."""
        key = (tuple(classnames), tuple(templates), normalize_each, str(self.device),
               torch.is_autocast_enabled(self.device.type))
        if key not in self._zero_shot_cache:
            # Normal tensors even when first asked inside an inference_mode eval loop: training reuses them.
            with torch.inference_mode(False):
                names = [c.replace("_", " ") for c in classnames]  # prompt form of dataset class names
                per_template = [self.encode_text([t.format(c) for c in names]).float() for t in templates]  # T x (C, D)
                if normalize_each:
                    per_template = [F.normalize(f, dim=-1) for f in per_template]
                mean = torch.stack(per_template).mean(0)  # (C, D)
                self._zero_shot_cache[key] = F.normalize(mean, dim=-1)
        return self._zero_shot_cache[key]

    # -- images ----------------------------------------------------------------------------------
    def encode_image(self, images: Tensor, vision_prompts: Tensor | None = None,
                     deep: DeepPrompts | None = None) -> Tensor:
        """(B, 3, H, W) -> (B, D). Without prompts this is open_clip's own ``encode_image``."""
        if vision_prompts is None and not deep:
            return self._plain_image_encoder(images.to(self.image_dtype()))
        return self.require_vision("vision prompts").encode(images.to(self.image_dtype()), vision_prompts, deep)

    def encode_image_with_hidden_states(self, images: Tensor, read: Callable[[Tensor], Any] | None = None
                                        ) -> tuple[Tensor, list[Any]]:
        """(B, 3, H, W) -> the (B, D) feature of ``encode_image`` and, from the same pass, each vision block's
        output (B, L, W), or what ``read`` makes of it (``VisionTower.encode_with_hidden_states``)."""
        return self.require_vision("vision hidden states").encode_with_hidden_states(
            images.to(self.image_dtype()), read)

    def image_dtype(self) -> torch.dtype:
        """The dtype of the image tower's input layer (open_clip keeps class/positional embeddings fp32
        when the rest is cast to fp16 / bf16)."""
        conv = getattr(self.model.visual, "conv1", None)
        weight = getattr(conv, "weight", None)
        return weight.dtype if weight is not None else next(self.model.visual.parameters()).dtype
