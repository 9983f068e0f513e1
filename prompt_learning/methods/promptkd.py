"""PromptKD: unsupervised prompt distillation (Li et al., "PromptKD: Unsupervised Prompt Distillation for
Vision-Language Models", CVPR 2024; docs/methods/promptkd.md).

A frozen, prompted **teacher** (an export of this project, e.g. IVLP or PromptSRC trained on ViT-L/14) and a
**student** on the run's backbone. Class c is represented by the teacher's text feature
t_c = norm(g_T(prompt_T(c))) in R^{D_T}, computed once per class set (``prepare`` for the training classes).

* student: u(x) = norm(Proj(f_S(x; P_v))), f_S the student's image feature with IVLP vision prompts P_v (``depth``
  layers x ``n_ctx_vision`` tokens), Proj = Conv1x1(D_S -> D_T, bias) -> BN2d(D_T) -> ReLU -> Conv1x1(D_T -> D_T,
  bias) on (B, D_S, 1, 1); z^S = s_S * u(x)^T t_c (s_S the student's logit scale);
* teacher: z^T = s_T * norm(f_T(x; its prompts))^T t_c, on the same view, without gradients;
* loss (KD only, labels unused): L = lambda * T^2 * sum_{b,c} p^T_bc (log p^T_bc - log p^S_bc) / (B * C), with
  p = softmax(z / T); lambda = ``kd_weight`` (1000; 200 for FGVC Aircraft, Flowers, DTD: ``kd_weights``), T = 1.

Trained on unlabeled images, by default transductively (``data.transductive``): every training image of the
classes tested on, with the teacher's features for all of them. The student's text tower is never used. The
export holds P_v, the projector (BN statistics included) and t_c of the trained class set; other class names
need the teacher (``teacher_export``), which the export records.

Departures: the teacher's features are float32 and computed once, not per batch; the last epoch is kept
(the official best_val selects on the base test set).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prompt_learning.classes import ClassSet
from prompt_learning.errors import ConfigurationError
from prompt_learning.methods.base import MethodConfig, MethodOutput, PromptMethod, register_method
from prompt_learning.methods.stages import StageData
from prompt_learning.prompts.deep import LayerPrompts, prompt_depth, split_input_layer
from prompt_learning.validation import Rule, dict_of, number

log = logging.getLogger(__name__)
REDUCED_KD_WEIGHT = {"fgvc_aircraft": 200.0, "oxford_flowers": 200.0, "dtd": 200.0}  # the official scripts' note


@dataclass
class PromptKDConfig(MethodConfig):
    name: str = "promptkd"
    teacher_export: str = ""  # the teacher: an export directory of this project (or hf-hub:<repo>)
    teacher_checkpoint: str = ""  # the teacher backbone's checkpoint file, when the export names a local file
    n_ctx_vision: int = 4  # student vision prompt tokens per layer
    depth_vision: int = 9  # prompted student vision layers, counting the input layer (cross-dataset preset: 3)
    init_std: float = 0.02
    temperature: float = 1.0
    kd_weight: float = 1000.0  # lambda, datasets not in kd_weights
    kd_weights: dict[str, float] = field(default_factory=lambda: dict(REDUCED_KD_WEIGHT))
    # Filled from the teacher when training starts, and read back from a PromptKD export:
    teacher_dim: int = 0  # D_T, the teacher's joint embedding width
    teacher: dict[str, Any] = field(default_factory=dict)  # the teacher's method config and backbone identity

    RULES: ClassVar[dict[str, Rule]] = {"init_std": number(0), "temperature": number(above=0),
                                        "kd_weight": number(0), "kd_weights": dict_of(number(0), "dataset -> weight")}

    def __post_init__(self) -> None:
        if self.n_ctx_vision < 1 or self.depth_vision < 1:
            raise ConfigurationError(f"method.n_ctx_vision={self.n_ctx_vision}, method.depth_vision="
                                     f"{self.depth_vision}: the student learns vision prompts; both must be >= 1.")


_LOADED: dict[tuple[str, str, float], PromptMethod] = {}  # the last teacher loaded (sweeps reuse it)


def load_teacher(export: str, checkpoint: str = "") -> PromptMethod:
    """The frozen teacher method of ``export`` (on its backbone; ``checkpoint``: the backbone's file when the export
    names a local one). The last one loaded is kept: runs of a sweep in one process share it (frozen, in eval mode)."""
    from prompt_learning.export.io import CONFIG_FILE, export_dir, load_method  # noqa: I001 (the export layer builds on methods)

    directory = export_dir(export)
    config = Path(directory) / CONFIG_FILE
    key = (str(Path(directory).resolve()), checkpoint, config.stat().st_mtime if config.is_file() else 0.0)
    if key not in _LOADED:
        _LOADED.clear()
        _LOADED[key] = load_method(directory, checkpoint or None).requires_grad_(False).eval()
    return _LOADED[key]


class FeatureProjector(nn.Module):
    """Proj: (B, D_in) -> (B, D_out) through Conv1x1(D_in, D_out) -> BN2d(D_out) -> ReLU -> Conv1x1(D_out, D_out),
    the features seen as (B, D, 1, 1) maps (PromptKD's projector, with its parameter names' roles)."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.expand = nn.Conv2d(d_in, d_out, kernel_size=1)
        self.norm = nn.BatchNorm2d(d_out)
        self.mix = nn.Conv2d(d_out, d_out, kernel_size=1)

    def forward(self, features: Tensor) -> Tensor:
        maps = features[:, :, None, None]  # (B, D_in, 1, 1)
        return self.mix(F.relu(self.norm(self.expand(maps)))).flatten(1)  # (B, D_out)


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """T^2 * sum_{b,c} p^T (log p^T - log p^S) / (B * C), p = softmax(z / T): (B, C) x (B, C) -> scalar."""
    log_student = F.log_softmax(student_logits.float() / temperature, dim=-1)  # (B, C)
    log_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)  # (B, C)
    kl = (log_teacher.exp() * (log_teacher - log_student)).sum()
    return kl * temperature ** 2 / student_logits.numel()


@register_method
class PromptKD(PromptMethod):
    """Student vision prompts ``vision_prompts``, ``projector`` and the teacher's class features
    ``teacher_text_features`` (C, D_T) of the trained class set (a buffer: exported). The teacher is held by
    reference, loaded from ``teacher_export`` when first needed."""

    name = "promptkd"
    Config = PromptKDConfig
    touches_image_tower = True
    prepares = True
    reads_labels = False
    unlabeled_train = True
    transductive = True
    not_exported = ("projector.norm.num_batches_tracked",)  # an integer step count, not a learned value

    def __init__(self, cfg: PromptKDConfig, backbone, classes: ClassSet) -> None:
        super().__init__(cfg, backbone, classes)
        vision = self.require_vision()
        if cfg.teacher_export and not cfg.teacher_dim:  # training: what the teacher is, from its export's config
            self._describe_teacher(cfg)
        if not cfg.teacher_dim:
            raise ConfigurationError("method=promptkd distils a teacher: set method.teacher_export=<export dir of a "
                                     "prompted teacher> (train it first, e.g. method=ivlp on a larger backbone; "
                                     "docs/methods/promptkd.md).")
        depth = prompt_depth(cfg.depth_vision, vision.depth, "method.depth_vision", backbone.model_name)
        self.vision_prompts = LayerPrompts(range(depth), cfg.n_ctx_vision, vision.width, cfg.init_std)
        self.projector = FeatureProjector(backbone.embed_dim, cfg.teacher_dim)
        self.register_buffer("teacher_text_features", torch.zeros(len(classes), cfg.teacher_dim))  # (C, D_T)
        object.__setattr__(self, "_teacher", None)  # loaded on first use, never a submodule (not exported)
        self._features: dict[ClassSet, Tensor] = {}  # teacher class features of other class sets

    def _describe_teacher(self, cfg: PromptKDConfig) -> None:
        from prompt_learning.export.io import export_dir, read_export  # noqa: I001 (the export layer builds on methods)

        directory = export_dir(cfg.teacher_export)
        config = read_export(directory)
        local = Path(cfg.teacher_export).expanduser()
        if local.exists():  # recorded absolute, so that a re-test from elsewhere finds it (hf-hub: kept as given)
            cfg.teacher_export = str(Path(directory).resolve())
        cfg.teacher_dim = int(config["backbone"]["embed_dim"])
        cfg.teacher = {"method": config["method"], "backbone": config["backbone"],
                       "classnames": len(config["classnames"]), "dataset": config.get("dataset")}

    # -- the teacher ---------------------------------------------------------------------------------
    def teacher(self) -> PromptMethod:
        """The frozen teacher, loaded from ``teacher_export`` on first use and kept on the student's device."""
        if self._teacher is None:
            if not self.cfg.teacher_export:
                raise ConfigurationError("This PromptKD student scores the classes it was trained on; other class "
                                         "names need its teacher's text features: set method.teacher_export=<the "
                                         "teacher's export> (recorded in method.teacher).")
            teacher = load_teacher(self.cfg.teacher_export, self.cfg.teacher_checkpoint)
            self._check_preprocessing(teacher)
            object.__setattr__(self, "_teacher", teacher)
        device = self.backbone.device
        if self._teacher.backbone.device != device:
            self._teacher.backbone.to(device)
            self._teacher.to(device)
        return self._teacher

    def _check_preprocessing(self, teacher: PromptMethod) -> None:
        """Teacher and student read the same image tensors: their eval preprocessing must agree."""
        mine, theirs = repr(self.backbone.preprocess_eval), repr(teacher.backbone.preprocess_eval)
        if mine != theirs:
            raise ConfigurationError(f"PromptKD feeds the student's images to the teacher, but the teacher "
                                     f"({teacher.backbone.model_name}) preprocesses images as {theirs} and the "
                                     f"student ({self.backbone.model_name}) as {mine}; choose backbones with the "
                                     f"same input size and normalisation.")

    def teacher_logits(self, images: Tensor, classes: ClassSet, text_features: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, C) z^T on the view the student sees, without gradients (``text_features``: t_c)."""
        teacher = self.teacher()
        with torch.no_grad():
            return teacher.forward_features(teacher.encode_images(images), classes, text_features).logits

    # -- forward -------------------------------------------------------------------------------------
    def encode_images(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, D_T): u(x) = norm(Proj(f_S(x; P_v)))."""
        first, deep = split_input_layer(self.vision_prompts())
        features = self.backbone.encode_image(images, first, deep).float()  # (B, D_S)
        return F.normalize(self.projector(features), dim=-1)  # (B, D_T)

    def encode_classes(self, classes: ClassSet, image_features: Tensor | None = None) -> Tensor:
        """(C, D_T) teacher features t_c: the exported ones for the trained classes (any subset, e.g. base or
        new), else the teacher's, computed once per class set."""
        if classes.names == self.train_classes.names:
            return self.teacher_text_features  # (C, D_T)
        index = {n: i for i, n in enumerate(self.train_classes.names)}
        if all(n in index for n in classes.names):
            return self.teacher_text_features[[index[n] for n in classes.names]]  # (C, D_T)
        if classes not in self._features:
            with torch.no_grad():
                self._features[classes] = self.teacher().encode_classes(classes).float()  # (C, D_T)
        return self._features[classes].to(self.teacher_text_features.device)

    def forward(self, images: Tensor, classes: ClassSet, text_features: Tensor | None = None) -> MethodOutput:
        out = self.forward_features(self.encode_images(images), classes, text_features)
        if self.training:  # the teacher sees each training view once, in the same step
            out.extras["teacher_logits"] = self.teacher_logits(images, classes, out.text_features)  # (B, C)
        return out

    def loss(self, out: MethodOutput, labels: Tensor) -> dict[str, Tensor]:
        """KD only; ``labels`` are not read (the unlabeled path gives none)."""
        dataset = out.classes.dataset if out.classes is not None else None
        weight = self.cfg.kd_weights.get(dataset or "", self.cfg.kd_weight)
        return {"kd": weight * kd_loss(out.logits, out.extras["teacher_logits"], self.cfg.temperature)}

    # -- stages --------------------------------------------------------------------------------------
    def prepare(self, data: StageData) -> dict[str, Any]:
        """Load the teacher and store its class features t_c of the training classes (once, not per batch)."""
        teacher = self.teacher()
        self.teacher_text_features.copy_(teacher.encode_classes(data.train_classes).float())
        return {"teacher": {"method": teacher.name, "backbone": teacher.backbone.model_name,
                            "embed_dim": self.cfg.teacher_dim}, "teacher_classes": len(data.train_classes)}
