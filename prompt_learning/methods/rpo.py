"""RPO: Read-only Prompt Optimization (Lee et al., "Read-only Prompt Optimization for Vision-Language Few-shot
Learning", ICCV 2023; docs/methods/rpo.md).

K pairs of learned tokens, ``text_prompt`` (K, W_t) and ``img_prompt`` (K, W_v), enter the two towers as read-only
tokens (``prompt_learning/backbone/read_only.py``): without positional embedding, they attend to the original tokens
at every block, and nothing attends to them, so the towers' own CLS / EOT features stay those of the frozen model.

* text, class c, prompt "a photo of a {c}." with its EOT at e_c: the K prompts follow the EOT (slots e_c+1..e_c+K)
  and read the tokens 0..e_c; t_{k,c} = norm(ln_final(h_{e_c+k}) W_t) (K, C, D), image-independent;
* vision: the K prompts follow the 1 + P image tokens (through ``ln_pre``) and read them; v_k(x) = norm(ln_post(
  h_{P+1+k}) W_v) (B, K, D);
* logits_{b,c} = (1/K) sum_k s * v_k(x_b)^T t_{k,c}, s the frozen logit scale; L = cross-entropy.

Initialisation (the official ``PromptLearner``): text_prompt = e(EOT) + 0.1 * n / |n|, img_prompt = class embedding +
0.1 * n / |n|, n ~ N(0, I) per token. K = 24 on ViT-B/16: 24 * 512 + 24 * 768 = 30,720 learned numbers.

Departures: class names read "_" as a space, as every method of this project (the official keeps the "_"); the
prompts run as queries against the original tokens' keys and values instead of 77-token sequences with per-class
masks (the same numbers, checked against the masked form in the tests); the last epoch is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prompt_learning.backbone import FrozenCLIP
from prompt_learning.backbone.read_only import (
    OriginalStates,
    image_states,
    read_only_image,
    read_only_problem,
    read_only_text,
    text_states,
)
from prompt_learning.classes import ClassSet, prompt_name
from prompt_learning.errors import ConfigurationError
from prompt_learning.methods.base import MethodConfig, MethodOutput, PromptMethod, register_method
from prompt_learning.prompts.assembly import eot_positions
from prompt_learning.validation import Rule, integer, number, template_text

CACHED_CLASS_SETS = 2  # class sets whose text keys / values are kept (training classes + the one being evaluated)


@dataclass
class RPOConfig(MethodConfig):
    name: str = "rpo"
    n_prompts: int = 4  # K, prompt pairs (TRAINER.RPO.K: 4 in main_K4.yaml; the paper's presets use 24, main_K24)
    template: str = "a photo of a {}."  # DATASET.PROMPT of the official configs; "dataset": the dataset's own
    init_noise: float = 0.1  # norm of the Gaussian direction added to the EOT / class embedding at init

    RULES: ClassVar[dict[str, Rule]] = {
        "n_prompts": integer(1), "init_noise": number(0),
        "template": Rule(lambda v: v == "dataset" or template_text()(v),
                         "'dataset' or a text with exactly one '{}' for the class name"),
    }


def unit_noise(n: int, width: int) -> Tensor:
    """(n, W) Gaussian directions of norm 1."""
    noise = torch.randn(n, width)  # (n, W)
    return noise / noise.norm(dim=-1, keepdim=True)


@register_method
class RPO(PromptMethod):
    """Read-only prompt pairs ``text_prompt`` (K, W_t) and ``img_prompt`` (K, W_v)."""

    name = "rpo"
    Config = RPOConfig
    touches_image_tower = True

    def __init__(self, cfg: RPOConfig, backbone: FrozenCLIP, classes: ClassSet) -> None:
        super().__init__(cfg, backbone, classes)
        vision = self.require_vision()
        text = backbone.require_text("RPO's text prompts")
        problem = read_only_problem(text, vision)
        if problem is not None:
            raise ConfigurationError(f"method 'rpo' appends read-only tokens to both towers, which model "
                                     f"{backbone.model_name!r} cannot take: {problem}. Choose an open_clip ViT CLIP "
                                     f"(e.g. backbone=vit_b16) or another method.")
        k = cfg.n_prompts
        with torch.no_grad():
            eot = self.backbone.token_embeddings(torch.tensor([self._eot_id()], device=backbone.device))  # (1, W_t)
            text_init = eot.float().cpu().expand(k, -1) + cfg.init_noise * unit_noise(k, text.width)  # (K, W_t)
            cls = vision.visual.class_embedding.detach().float().cpu()  # (W_v,)
            image_init = cls.expand(k, -1) + cfg.init_noise * unit_noise(k, vision.width)  # (K, W_v)
        self.text_prompt = nn.Parameter(text_init.to(backbone.device))
        self.img_prompt = nn.Parameter(image_init.to(backbone.device))
        self._states: dict[tuple, OriginalStates] = {}

    def _eot_id(self) -> int:
        """The end-of-text token id (CLIP BPE: 49407), read from the tokenizer when it does not declare one."""
        eot_id = self.backbone.eot_token_id
        if eot_id is None:
            ids = self.backbone.tokenize([""])  # (1, L)
            eot_id = int(ids[0, eot_positions(ids, None)[0]])
        return int(eot_id)

    def template(self, classes: ClassSet) -> str:
        """The class prompt's template: the configured one, or the dataset's own for ``template="dataset"``."""
        return classes.template if self.cfg.template == "dataset" else self.cfg.template

    # -- text: the original tokens once per class set, the prompts every call ------------------------------------
    def class_states(self, classes: ClassSet) -> OriginalStates:
        """The unprompted text pass over ``classes`` (keys / values per block, EOT features), cached per class set,
        device and autocast state; the K prompts must fit after each EOT in the context length."""
        device = self.backbone.device
        key = (classes.names, self.template(classes), str(device), torch.is_autocast_enabled(device.type),
               self.backbone.truncate_text, self.backbone.lean_blocks)
        if key not in self._states:
            with torch.inference_mode(False), torch.no_grad():  # normal tensors even when first asked in an eval loop
                states = self._text_states(classes)
            while len(self._states) >= CACHED_CLASS_SETS:
                self._states.pop(next(iter(self._states)))
            self._states[key] = states
        return self._states[key]

    def _text_states(self, classes: ClassSet) -> OriginalStates:
        template = self.template(classes)
        ids = self.backbone.tokenize([template.format(prompt_name(n)) for n in classes.names])  # (C, L)
        eot = eot_positions(ids, self.backbone.eot_token_id)  # (C,)
        length, k = ids.shape[1], self.cfg.n_prompts
        too_long = (eot + 1 + k > length).nonzero().flatten().tolist()
        if too_long:
            name = classes.names[too_long[0]]
            raise ConfigurationError(f"Class {name!r}: its prompt {template.format(prompt_name(name))!r} has "
                                     f"{int(eot[too_long[0]]) + 1} tokens, and {k} read-only tokens after it "
                                     f"(method.n_prompts) exceed the text context length {length}; shorten the class "
                                     f"name or lower method.n_prompts.")
        embeds = self.backbone.token_embeddings(ids)  # (C, L, W_t)
        return text_states(self.backbone.text, embeds, eot.cpu(), self.backbone.truncate_text)

    def encode_classes(self, classes: ClassSet, image_features: Tensor | None = None) -> Tensor:
        """(K, C, D) normalised t_{k,c}: image-independent, so the engine encodes them once per evaluation."""
        t = read_only_text(self.backbone.text, self.class_states(classes), self.text_prompt)  # (C, K, D)
        return F.normalize(t.float(), dim=-1).transpose(0, 1)  # (K, C, D)

    def zero_shot_class_features(self, classes: ClassSet) -> Tensor:
        """(C, D) normalised EOT features of the same pass: the frozen model's, untouched by the prompts."""
        return F.normalize(self.class_states(classes).pooled.float(), dim=-1)

    # -- images -------------------------------------------------------------------------------------------------
    def encode_prompted_images(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(B, 3, H, W) -> normalised CLS features (B, D), the frozen model's, and v_k(x) (B, K, D)."""
        states = image_states(self.backbone.vision, images.to(self.backbone.image_dtype()))
        v = read_only_image(self.backbone.vision, states, self.img_prompt)  # (B, K, D)
        return F.normalize(states.pooled.float(), dim=-1), F.normalize(v.float(), dim=-1)

    def encode_images(self, images: Tensor) -> Tensor:
        """(B, D) normalised CLS features: the image tower's own output, which the read-only prompts leave as
        it is; the logits read ``encode_prompted_images``' v_k instead."""
        return self.encode_prompted_images(images)[0]

    # -- logits -------------------------------------------------------------------------------------------------
    def logits(self, image_features: Tensor, text_features: Tensor) -> Tensor:
        """(B, K, D) v_k x (K, C, D) t_{k,c} -> (B, C): (1/K) sum_k s * v_k^T t_{k,c} (+ logit_bias)."""
        cos = torch.einsum("bkd,kcd->bc", image_features, text_features) / text_features.shape[0]  # (B, C)
        logits = self.backbone.logit_scale * cos
        bias = self.backbone.logit_bias
        return logits if bias is None else logits + bias

    def forward(self, images: Tensor, classes: ClassSet, text_features: Tensor | None = None) -> MethodOutput:
        """Logits of ``images`` over ``classes`` (``text_features``: the (K, C, D) of ``encode_classes``, reused).
        ``image_features`` of the output are the frozen CLS features; ``extras["image_prompts"]`` the v_k."""
        cls, v = self.encode_prompted_images(images)  # (B, D), (B, K, D)
        if text_features is None:
            text_features = self.encode_classes(classes)  # (K, C, D)
        return MethodOutput(self.logits(v, text_features), cls, text_features, classes, {"image_prompts": v})

    def forward_features(self, image_features: Tensor, classes: ClassSet,
                         text_features: Tensor | None = None) -> MethodOutput:
        raise ConfigurationError("method 'rpo' scores images by prompt tokens that read the image tokens inside the "
                                 "tower: it needs the images, not cached image features.")

    def text_prompt_tensors(self) -> dict[str, Tensor]:
        return {"text_prompt": self.text_prompt.detach()}
