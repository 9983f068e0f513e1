"""The method interface: a config dataclass plus an ``nn.Module`` holding learnable tensors only.

A method is one file in this package and one YAML in ``configs/method/``. The engine drives every
method through this interface and acts on the capability flags, never on a method's name:

* ``touches_image_tower`` -- False: image features do not depend on learned state (cacheable).
* ``conditional_text`` -- True: class features depend on the image, shape (B, C, D).
* ``supports_unseen_classes`` -- False: base-to-new / cross-dataset are refused at setup.
* ``trainable`` -- False: nothing to fit (zero-shot); the engine skips training.
* ``fits_on_features`` -- True: the fit reads frozen image features only (the linear probe).
* ``reads_labels`` -- False: nothing the method learns reads the labels of its training images (UPL labels
  them itself, PromptKD distils a teacher), so it may train on an unlabeled set (``data.unlabeled``);
* ``unlabeled_train`` / ``transductive`` -- the method's default for ``data.unlabeled`` (train on every
  training image without its label) and ``data.transductive`` (that set includes the images of the classes
  it is tested on, e.g. base-to-new's new classes; such runs are marked in results.json and in the tables).
* ``reads_hidden_states`` -- True: the forward reads the image tower's block outputs, not only the final image
  feature (GOPro's per-layer statistics), so the method is never scored from cached image features even though
  those do not depend on learned state.
* ``logits_are_log_probs`` -- True: ``MethodOutput.logits`` are already log-probabilities (Bayesian prompt
  learning's Monte-Carlo average log((1/L) sum_l p_l)), so calibration metrics (ECE, NLL) read them as such
  instead of as scores to soften; accuracy is the argmax either way.
* ``unfreezes_backbone`` -- the allow-list (``fnmatch`` patterns over open_clip parameter names) of backbone
  tensors the method may fine-tune. It trains *copies* of them (``unfreeze_backbone``, ``backbone/overrides.py``),
  its own parameters, exported with it, which run in place of the originals only inside
  ``overridden_backbone()`` (the default ``encode_images`` uses it): the shared backbone itself never changes.
  Its optimizer groups and rates are the method's (``configure_optimization``).
* ``uses_unseen_names_in_training`` -- before fit the engine hands ``receive_class_names`` every class name the
  run evaluates on the training dataset (training classes first), unseen ones included; other datasets' targets
  are left out (MoCoOp's text loss over base + new names). Not
  their images: results.json records it (``saw_unseen_class_names``) and the tables mark such rows.

Run stages. The engine runs the same sequence for every method, and a method joins a stage by
declaring it (a flag), never by its name:

1. ``prepare(data)`` when ``prepares``: before fit, without gradients; may derive buffers (a feature
   cache, pseudo-labels, teacher features) or replace the training set (``data.replace_train``);
2. fit: SGD through Lightning on ``loss(out, labels)`` when ``trainable``, or the method's own
   ``fit(data)`` when ``fits_in_closed_form``; nothing for a method with nothing to learn;
3. ``calibrate(data)`` when ``calibrates``: after fit, on the validation split only (a hyperparameter
   search such as Tip-Adapter's alpha / beta);
4. evaluate: test-time-adaptive methods (``test_time_adaptive``) get ``reset()`` then
   ``adapt(views, classes)``, gradients enabled, before the logits of each test sample; ``views`` are
   ``test_views`` augmented views of the decoded image (V, 3, H, W), or the eval view when it is 0; with
   ``adapts_on_eval_view`` the eval view comes first (1 + V, 3, H, W).

Augmentation is the run's (``dataset.train_transform``) unless a method returns its own from
``augmentation``: what it trains on, what ``prepare`` reads from ``data.train_loader`` / ``augmented_pass``
and what the augmented test views of a test-time-adaptive method are made with.

``loss`` is the method's own: cross-entropy plus ``extra_losses`` unless a method overrides it; so is the
optimisation when it returns one from ``configure_optimization`` (optimizer, schedule, gradient clipping).
Whatever ``prepare``, ``fit`` and ``calibrate`` return goes into results.json under its stage's name.

Logits follow CLIP: ``logit_scale * norm(f_img) @ norm(f_txt)^T (+ logit_bias for SigLIP towers)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prompt_learning.backbone import FrozenCLIP
from prompt_learning.backbone.overrides import BackboneOverrides
from prompt_learning.classes import ClassSet
from prompt_learning.errors import ConfigurationError
from prompt_learning.methods.stages import Optimization, StageData
from prompt_learning.prompts.templates import SHORTHANDS
from prompt_learning.registry import Registry, close_matches, did_you_mean
from prompt_learning.validation import Rule, dict_of, template_text


@dataclass
class MethodConfig:
    """Fields shared by every method's config; subclasses add the method's own hyperparameters, and in
    ``RULES`` what each accepts (``prompt_learning.validation``; checked with the types of the fields when
    the run's config is composed, a subclass inheriting its parents' rules)."""

    name: str = "???"

    RULES: ClassVar[dict[str, Rule]] = {}


TEMPLATE_NAMES = ("dataset", *SHORTHANDS)  # the shorthands a template list may hold (prompts/templates.py)


def _template_entry(entry: Any) -> bool:
    return isinstance(entry, str) and (entry in TEMPLATE_NAMES or entry.count("{}") == 1)


def _template_hint(value: Any) -> str:
    bad = [e for e in value if not _template_entry(e)] if isinstance(value, list | tuple) else []
    return did_you_mean(str(bad[0]), TEMPLATE_NAMES).strip() if bad else ""


TEMPLATE_LIST = Rule(lambda v: isinstance(v, list | tuple) and bool(v) and all(map(_template_entry, v)),
                     f"a non-empty list of templates, each one of {list(TEMPLATE_NAMES)} or a text with exactly "
                     f"one '{{}}' for the class name", _template_hint)
TEMPLATE_TABLE = dict_of(template_text(), "a mapping of dataset names to templates, each with exactly one '{}'")


@dataclass
class MethodOutput:
    logits: Tensor  # (B, C)
    image_features: Tensor  # (B, D), L2-normalised
    text_features: Tensor  # (C, D) or (B, C, D) when conditional_text, L2-normalised
    classes: ClassSet | None = None  # the class set the logits are over
    extras: dict[str, Tensor] = field(default_factory=dict)  # what a method's losses need besides the above


class PromptMethod(nn.Module):
    """Base class. Subclasses set ``name`` and ``Config`` and create their learnable tensors in ``__init__``.

    The frozen backbone is held by reference and is *not* a submodule: ``parameters()`` and
    ``state_dict()`` of a method are its learned tensors only.
    """

    name: ClassVar[str]
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    # The class value is the method's rule; an instance may narrow it for its config (CoOp with
    # class-specific context cannot score unseen classes; IVLP without vision prompts leaves the image
    # tower alone). The engine reads the instance.
    touches_image_tower: bool = False
    conditional_text: ClassVar[bool] = False
    supports_unseen_classes: bool = True
    trainable: ClassVar[bool] = True
    fits_on_features: ClassVar[bool] = False
    prepares: ClassVar[bool] = False  # prepare(data) runs before fit
    fits_in_closed_form: ClassVar[bool] = False  # fit(data) replaces SGD
    calibrates: ClassVar[bool] = False  # calibrate(data) runs after fit, on the validation split
    test_time_adaptive: ClassVar[bool] = False  # reset() + adapt(images, classes) before each test sample
    test_views: int = 0  # V > 0: adapt() gets V augmented views of each test image (an instance may set it)
    adapts_on_eval_view: ClassVar[bool] = False  # adapt() gets the eval view too, first: (1 + V, 3, H, W)
    not_exported: ClassVar[tuple[str, ...]] = ()  # state-dict prefixes that are training state, not prompts
    reads_labels: ClassVar[bool] = True  # False: may train without labels (data.unlabeled)
    unlabeled_train: ClassVar[bool] = False  # data.unlabeled=null means this
    transductive: ClassVar[bool] = False  # data.transductive=null means this (with unlabeled training)
    logits_are_log_probs: ClassVar[bool] = False  # logits are log-probabilities (calibration metrics read them so)
    unfreezes_backbone: tuple[str, ...] = ()  # allow-list: backbone tensors it may train copies of (instance: narrower)
    uses_unseen_names_in_training: ClassVar[bool] = False  # receive_class_names(every evaluated class) before fit
    reads_hidden_states: ClassVar[bool] = False  # forward reads the vision blocks' outputs: scored from images only

    def __init__(self, cfg: MethodConfig, backbone: FrozenCLIP, classes: ClassSet) -> None:
        super().__init__()
        object.__setattr__(self, "backbone", backbone)  # a reference, not a registered submodule
        self.cfg = cfg
        self.train_classes = classes

    # -- forward -----------------------------------------------------------------------------------
    def encode_images(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, D) normalised image features (with this method's backbone copies, if any)."""
        with self.overridden_backbone():
            return F.normalize(self.backbone.encode_image(images).float(), dim=-1)

    def encode_classes(self, classes: ClassSet, image_features: Tensor | None = None) -> Tensor:
        """Class prompts -> (C, D) normalised text features ((B, C, D) when ``conditional_text``)."""
        raise NotImplementedError

    def logits(self, image_features: Tensor, text_features: Tensor) -> Tensor:
        """(B, D) x (C, D) or (B, C, D) -> (B, C) scaled cosine logits."""
        if text_features.dim() == 3:
            cos = torch.einsum("bd,bcd->bc", image_features, text_features)  # (B, C)
        else:
            cos = image_features @ text_features.T  # (B, C)
        logits = self.backbone.logit_scale * cos
        bias = self.backbone.logit_bias
        return logits if bias is None else logits + bias

    def forward(self, images: Tensor, classes: ClassSet, text_features: Tensor | None = None) -> MethodOutput:
        """Logits of ``images`` over ``classes``; pass ``text_features`` to reuse class features
        encoded once per evaluation (valid when not ``conditional_text``)."""
        return self.forward_features(self.encode_images(images), classes, text_features)

    def forward_features(self, image_features: Tensor, classes: ClassSet,
                         text_features: Tensor | None = None) -> MethodOutput:
        """What ``forward`` computes after ``encode_images``, from (B, D) normalised image features: the
        step on cached features of training views (``data.feature_cache.train_views``) and cached test sets."""
        if text_features is None:
            text_features = self.encode_classes(classes, image_features)  # (C, D) or (B, C, D)
        return MethodOutput(self.logits(image_features, text_features), image_features, text_features, classes)

    # -- training hooks (engine calls these from its Lightning hooks) -------------------------------
    def loss(self, out: MethodOutput, labels: Tensor) -> dict[str, Tensor]:
        """Named loss terms; the engine minimises their sum. Default: cross-entropy + ``extra_losses``."""
        return {"ce": F.cross_entropy(out.logits, labels), **self.extra_losses(out, labels)}

    def extra_losses(self, out: MethodOutput, labels: Tensor) -> dict[str, Tensor]:
        """Regularisers added to the loss (KgCoOp, PromptSRC)."""
        return {}

    def logged_metrics(self) -> dict[str, Tensor]:
        """Values of the last training step to log without adding them to the loss (ProGrad's KL term)."""
        return {}

    # -- stages outside the SGD loop (module docstring) -------------------------------------------------
    def prepare(self, data: StageData) -> dict[str, Any] | None:
        """Before fit, without gradients (``prepares``). Returns a summary for results.json, or None."""
        return None

    def fit(self, data: StageData) -> dict[str, Any]:
        """The method's own fit instead of SGD (``fits_in_closed_form``); returns a summary for results.json."""
        raise NotImplementedError(f"method {self.name!r} is trained by gradient descent, not by its own fit")

    def calibrate(self, data: StageData) -> dict[str, Any] | None:
        """After fit, on the validation split only (``calibrates``). Returns a summary, or None."""
        return None

    def reset(self) -> None:
        """Undo the previous test sample's adaptation (``test_time_adaptive``): back to the state after fit,
        which is also what the export holds (the engine resets once more after each evaluation)."""

    def adapt(self, views: Tensor, classes: ClassSet) -> None:
        """Adapt to one test sample before its eval view is scored; gradients are on. ``views``: (V, 3, H, W),
        ``test_views`` augmentations of the decoded image (the training transform), or (1, 3, H, W), the eval
        view, when ``test_views`` is 0."""

    def augmentation(self, default: Callable, classes: ClassSet) -> Callable:
        """The augmentation of a decoded image this method uses for ``classes`` (the training set's when it trains
        or prepares, an eval set's for test views): ``default``, the run's, unless the method has its own."""
        return default

    def test_time_parameters(self) -> list[nn.Parameter]:
        """What test-time prompt tuning (method ``tpt``) tunes when it starts from this method's export: the
        learned prompt vectors. Every learned tensor by default; a method whose prompt is computed from its
        parameters (PRE's encoder) names the vectors themselves."""
        return list(self.parameters())

    def export_settings(self) -> dict[str, Any]:
        """The config the export records (``prompt_config.json``: ``method``), from which ``load_method``
        rebuilds this method before loading its tensors: ``cfg`` as it is now by default."""
        return dataclasses.asdict(self.cfg)

    def configure_optimization(self, optim: Mapping[str, Any], max_epochs: int, total_steps: int
                               ) -> Optimization | None:
        """The method's own optimizer / schedule / gradient clipping for the SGD stage (e.g. AdamW with a
        per-step cosine), or None for the shared one: SGD with a warm-up cosine per epoch from ``optim``.
        ``total_steps`` is the number of optimizer steps of the whole fit."""
        return None

    def after_backward(self) -> None:
        """Called after ``backward`` and before the optimizer step (ProGrad's gradient projection)."""

    def on_train_epoch_end(self, epoch: int, max_epochs: int) -> None:
        """Called after each training epoch (PromptSRC's Gaussian prompt aggregation)."""

    # -- backbone tensors a method fine-tunes (``unfreezes_backbone``) and class names it reads --------------
    def unfreeze_backbone(self, select: Sequence[str] | None = None) -> BackboneOverrides:
        """Train copies of the backbone tensors matching ``select`` (default: the whole allow-list
        ``unfreezes_backbone``); a tensor outside the allow-list is refused. The copies are this method's
        parameters (``backbone_copies.*`` in its state dict and export)."""
        self.backbone_copies = BackboneOverrides(self.backbone, self.unfreezes_backbone, select)
        return self.backbone_copies

    def backbone_overrides(self) -> BackboneOverrides | None:
        """The trained backbone copies, or None when the method fine-tunes no backbone tensor."""
        copies = self._modules.get("backbone_copies")
        return copies if isinstance(copies, BackboneOverrides) else None

    def overridden_backbone(self) -> AbstractContextManager:
        """The backbone as this method runs it: inside the block its trained copies replace the originals (restored
        on exit, after an exception too); a no-op for a method that fine-tunes nothing."""
        copies = self.backbone_overrides()
        return copies.applied() if copies is not None else nullcontext()

    def receive_class_names(self, classes: ClassSet) -> None:
        """Before fit (``uses_unseen_names_in_training``): every class name the run evaluates on the training
        dataset (not cross-dataset targets), the training classes first, with the training set's template and dataset. Names only, never images or labels."""

    def require_vision(self):
        """The backbone's ViT image tower, or a setup error listing the methods that do not need one."""
        text_only = sorted(n for n, c in list_methods().items() if not (c.touches_image_tower or c.reads_hidden_states))
        return self.backbone.require_vision(f"method {self.name!r}", alternatives=text_only)

    def check_classes(self, classes: ClassSet) -> None:
        """Raise a ``ConfigurationError`` if this method cannot score ``classes``."""
        if not self.supports_unseen_classes and classes.names != self.train_classes.names:
            raise ConfigurationError(f"Method {self.name!r} with this config cannot score classes it was not "
                                     f"trained on ({len(classes)} classes given, {len(self.train_classes)} trained).")

    # -- export ------------------------------------------------------------------------------------
    def text_prompt_tensors(self) -> dict[str, Tensor]:
        """Learned vectors that live in the text tower's token-embedding space, by name, each (n, W):
        what ``scripts/interpret_prompt.py`` maps back to vocabulary tokens. Empty by default."""
        return {}

    def export_tensors(self) -> dict[str, Tensor]:
        """The learned tensors, detached, by name (what ``prompts.safetensors`` holds)."""
        return {k: v.detach().contiguous() for k, v in self.state_dict().items() if not k.startswith(self.not_exported)}

    def load_tensors(self, tensors: Mapping[str, Tensor]) -> None:
        expected = {k: v for k, v in self.state_dict().items() if not k.startswith(self.not_exported)}
        missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
        if missing or unexpected:
            raise ConfigurationError(f"Learned tensors do not match method {self.name!r}: missing {missing}, "
                                     f"unexpected {unexpected}.")
        for key, value in tensors.items():
            if value.shape != expected[key].shape:
                raise ConfigurationError(f"Tensor {key!r} has shape {tuple(value.shape)}, method {self.name!r} "
                                         f"with this config expects {tuple(expected[key].shape)}.")
        self.load_state_dict(dict(tensors), strict=not self.not_exported)


METHODS: Registry[type[PromptMethod]] = Registry("method", builtins=["prompt_learning.methods.*"])
register_method = METHODS.register
"""``@register_method`` on a :class:`PromptMethod` subclass makes it ``method=<its name>`` (outside code too)."""


def list_methods() -> dict[str, type[PromptMethod]]:
    """Every registered method, by name (the built-in ones and those of imported plugins)."""
    return METHODS.items()


def method_class(name: str) -> type[PromptMethod]:
    return METHODS.get(name)


def build_config(cls: type[PromptMethod], values: Mapping[str, Any] | MethodConfig) -> MethodConfig:
    """A method's config dataclass from a mapping, naming unknown keys and close matches."""
    if isinstance(values, MethodConfig):
        return values
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    unknown = sorted(set(values) - fields)
    if unknown:
        close = {k: close_matches(k, fields, n=1) for k in unknown}
        raise ConfigurationError(f"Unknown config key(s) {unknown} for method {cls.name!r} (close matches: "
                                 f"{close}). Valid keys: {sorted(fields)}.")
    return cls.Config(**{"name": cls.name, **dict(values)})


def create_method(cfg: Mapping[str, Any] | MethodConfig, backbone: FrozenCLIP, classes: ClassSet) -> PromptMethod:
    """Build the method named ``cfg["name"]`` on ``backbone`` for the training class set ``classes``."""
    name = cfg.name if isinstance(cfg, MethodConfig) else cfg.get("name", "???")
    cls = method_class(name)
    return cls(build_config(cls, cfg), backbone, classes)
