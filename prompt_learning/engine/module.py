"""PromptLearningModule: the one LightningModule for every method.

It owns the frozen backbone and the method, sends only the method's trainable tensors to the
optimizer, calls the method's hooks from Lightning's, encodes each evaluation's class prompts once
per evaluation (not once per batch), and keeps the frozen backbone out of checkpoints.

Every test step feeds three metrics per eval set, all accumulated on the device (no host read per batch) and
summed over DDP processes by torchmetrics: top-1 accuracy from integer counts, the expected calibration error
(15 equal-width confidence bins, L1) and the negative log-likelihood (docs/protocols.md, "Metrics of a run").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.classification import MulticlassAccuracy, MulticlassCalibrationError

from prompt_learning.backbone import FrozenCLIP
from prompt_learning.classes import ClassSet
from prompt_learning.engine.schedule import build_sgd_cosine
from prompt_learning.errors import ConfigurationError
from prompt_learning.methods.base import PromptMethod
from prompt_learning.methods.stages import adapted_logits


class CorrectCount(Metric):
    """Correct top-1 predictions and samples seen, as integers: the accuracy is exact, and torchmetrics sums
    both over DDP processes."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("correct", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, logits: Tensor, labels: Tensor) -> None:  # (B, C), (B,)
        self.correct += (logits.argmax(-1) == labels).sum()
        self.total += labels.numel()

    def compute(self) -> tuple[Tensor, Tensor]:
        return self.correct, self.total


ECE_BINS = 15  # equal-width confidence bins of the expected calibration error (Guo et al., 2017)


def log_probabilities(logits: Tensor, are_log_probs: bool) -> Tensor:
    """(B, C) log p(c | x) of a method's output: its logits read as log-probabilities as they are when the method
    declares ``logits_are_log_probs`` (nothing is added or rescaled), else log_softmax(logits); in float32."""
    logits = logits.float()  # (B, C)
    return logits if are_log_probs else logits.log_softmax(-1)


class NegativeLogLikelihood(Metric):
    """NLL = -(1/N) sum_i log p(y_i | x_i) in nats (the mean cross-entropy) from (B, C) log-probabilities: a
    float32 sum of the per-batch sums and an integer count, both summed over DDP processes."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("nll", default=torch.zeros(()), dist_reduce_fx="sum")
        self.add_state("total", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, log_probs: Tensor, labels: Tensor) -> None:  # (B, C), (B,)
        self.nll -= log_probs.gather(1, labels[:, None]).sum()  # -sum_i log p(y_i | x_i)
        self.total += labels.numel()

    def compute(self) -> tuple[Tensor, Tensor]:
        """The summed NLL and the number of samples (NLL = their ratio)."""
        return self.nll, self.total


class CalibrationMetrics(nn.Module):
    """ECE (torchmetrics ``MulticlassCalibrationError``: ``ECE_BINS`` bins, L1) and NLL of one eval set of
    ``num_classes`` classes, both fed (B, C) log-probabilities (:func:`log_probabilities`)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        # validate_args=False: no per-batch input checks (one of the labels' values would read them on the host)
        self.ece = MulticlassCalibrationError(num_classes=num_classes, n_bins=ECE_BINS, norm="l1",
                                              validate_args=False)
        self.nll = NegativeLogLikelihood()

    def update(self, log_probs: Tensor, labels: Tensor) -> None:  # (B, C), (B,)
        # probabilities in [0, 1] (a declared log-probability may round a hair above 0), so that torchmetrics
        # never takes them for logits to soften again
        self.ece.update(log_probs.exp().clamp(0.0, 1.0), labels)  # (B, C)
        self.nll.update(log_probs, labels)

    def compute(self) -> dict[str, float | None]:
        """``{"ece": %, "nll": nats}``, both None without samples; NLL is None when it is not finite (a true
        class given the log-probability -inf)."""
        nll_sum, total = self.nll.compute()
        if int(total) == 0:
            return {"ece": None, "nll": None}
        nll = float(nll_sum) / int(total)
        return {"ece": 100.0 * float(self.ece.compute()), "nll": nll if math.isfinite(nll) else None}

    def reset(self) -> None:
        self.ece.reset()
        self.nll.reset()


class PromptLearningModule(L.LightningModule):
    def __init__(self, backbone: FrozenCLIP, method: PromptMethod, train_classes: ClassSet,
                 eval_sets: Sequence[tuple[str, ClassSet]], optim: dict[str, Any] | None = None,
                 run_identity: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.backbone, self.method = backbone, method
        self.train_classes = train_classes
        self.eval_names = [name for name, _ in eval_sets]
        self.eval_classes = dict(eval_sets)
        self.optim = dict(optim or {})
        self.run_identity = run_identity or {}  # config fingerprint + settings, stored so resume can check them
        self.strict_loading = False  # checkpoints deliberately omit the frozen backbone
        self.val_acc = MulticlassAccuracy(num_classes=len(train_classes), average="micro")
        self.test_counts = nn.ModuleDict({n: CorrectCount() for n, _ in eval_sets})
        self.test_calibration = nn.ModuleDict({n: CalibrationMetrics(len(c)) for n, c in eval_sets})
        self.test_results: dict[str, float] = {}  # eval name -> top-1 accuracy (%)
        self.test_calibration_results: dict[str, dict[str, float | None]] = {}  # eval name -> {"ece", "nll"}
        self._text_features: dict[str, Tensor] = {}
        self._non_finite: Tensor | None = None
        self._max_grad_norm: float | None = None  # the method's own clipping (configure_optimization)
        self._marks_cudagraph_steps = False  # set in setup(): on a CUDA device
        frozen = [n for n, p in self.named_parameters() if p.requires_grad and not n.startswith("method.")]
        assert not frozen, f"backbone parameters must be frozen, found trainable: {frozen[:3]}"

    def setup(self, stage: str) -> None:
        """Under mixed precision on a GPU, cast the frozen weights to the autocast dtype once (the weights never
        change, so re-casting them at every matmul is wasted bandwidth; docs/performance.md)."""
        precision = str(self.trainer.precision)
        # CUDA graphs (trainer.compile=reduce-overhead) exist only on a GPU; elsewhere marking a step would only
        # import torch's inductor (~15 s on a slow CPU) to do nothing
        self._marks_cudagraph_steps = self.trainer.strategy.root_device.type == "cuda"
        if self.trainer.strategy.root_device.type == "cuda" and precision in ("bf16-mixed", "16-mixed"):
            self.backbone.cast_frozen_weights(torch.bfloat16 if precision.startswith("bf16") else torch.float16)

    def _mark_cudagraph_step(self) -> None:
        """trainer.compile=reduce-overhead: each batch starts a new iteration of CUDA graphs."""
        if self._marks_cudagraph_steps:
            torch.compiler.cudagraph_mark_step_begin()

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._mark_cudagraph_step()

    def on_validation_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._mark_cudagraph_step()

    def on_test_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._mark_cudagraph_step()

    # -- training ------------------------------------------------------------------------------------
    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        inputs, labels = batch
        if inputs.dim() == 2:  # (B, D) cached image features of augmented views (data.feature_cache.train_views)
            out = self.method.forward_features(inputs, self.train_classes)  # methods keeping PromptMethod.forward
        else:  # (B, 3, H, W) images
            out = self.method(inputs, self.train_classes)
        losses = self.method.loss(out, labels)
        loss = torch.stack(list(losses.values())).sum()
        bad = ~torch.isfinite(loss.detach())  # accumulated on device; checked once per epoch (no per-step sync)
        self._non_finite = bad if self._non_finite is None else self._non_finite | bad
        # No per-step host sync: Lightning turns progress-bar values into Python floats after every batch, so
        # the bar shows the previous epoch's mean; loggers read the step values every trainer.log_every_n_steps
        # (capped at one epoch's batches, engine/tracking.py) and the epoch's mean as train/loss_epoch.
        self.log("train/loss", loss, batch_size=labels.shape[0])
        self.log("train/loss_epoch", loss, on_step=False, on_epoch=True, batch_size=labels.shape[0])
        self.log("loss", loss, on_step=False, on_epoch=True, prog_bar=True, logger=False, batch_size=labels.shape[0])
        extra = {**(losses if len(losses) > 1 else {}), **self.method.logged_metrics()}
        if extra:
            self.log_dict({f"train/{k}": v for k, v in extra.items()}, batch_size=labels.shape[0])
        return loss

    def on_after_backward(self) -> None:
        self.method.after_backward()

    def on_train_epoch_end(self) -> None:
        if self._non_finite is not None and bool(self._non_finite):
            raise FloatingPointError(f"The training loss became NaN or infinite in epoch {self.current_epoch + 1}; "
                                     f"lower optim.lr (or optim.warmup_lr), or check the data.")
        self.method.on_train_epoch_end(self.current_epoch, self.trainer.max_epochs)

    def configure_optimizers(self):
        """The method's own optimisation when it has one, else SGD with the warm-up cosine per epoch."""
        own = self.method.configure_optimization(self.optim, self.trainer.max_epochs,
                                                 int(self.trainer.estimated_stepping_batches))
        if own is not None:
            self._max_grad_norm = own.max_grad_norm
            if own.scheduler is None:
                return own.optimizer
            return {"optimizer": own.optimizer, "lr_scheduler": {"scheduler": own.scheduler, "interval": own.interval}}
        params = [p for p in self.method.parameters() if p.requires_grad]
        optimizer, scheduler = build_sgd_cosine(params, max_epochs=self.trainer.max_epochs, **self.optim)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Clip to the method's own gradient-norm limit (``Optimization.max_grad_norm``), else as the Trainer says."""
        if self._max_grad_norm is not None:
            self.clip_gradients(optimizer, gradient_clip_val=self._max_grad_norm, gradient_clip_algorithm="norm")
        else:
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    # -- evaluation ----------------------------------------------------------------------------------
    def _class_features(self, name: str, classes: ClassSet) -> Tensor | None:
        """Class features encoded once per evaluation; None when they depend on the image or on the
        adaptation to each test sample."""
        if self.method.conditional_text or (self.method.test_time_adaptive and name != "val"):
            return None
        if name not in self._text_features:
            with torch.no_grad():
                self._text_features[name] = self.method.encode_classes(classes)
        return self._text_features[name]

    def _eval_logits(self, name: str, classes: ClassSet, inputs: Tensor, adapt: bool = True) -> Tensor:
        """(B, C) logits of images (B, 3, H, W) or of cached frozen image features (B, D). A test-time-adaptive
        method is reset and adapted to each sample (gradients on) before that sample is scored; with
        ``test_views`` the inputs are (B, 1 + V, 3, H, W): it adapts on the V augmented views and the
        first (eval) view is scored."""
        if self.method.test_time_adaptive and adapt:
            samples = inputs if inputs.dim() == 5 else inputs.unsqueeze(1)  # (B, 1 + V, 3, H, W)
            return torch.cat([adapted_logits(self.method, s, classes) for s in samples])
        with torch.no_grad():
            text = self._class_features(name, classes)
            if inputs.dim() == 2:
                return self.method.forward_features(inputs, classes, text).logits
            return self.method(inputs, classes, text).logits

    def on_validation_epoch_start(self) -> None:
        self._text_features.clear()

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        images, labels = batch
        # validation measures the fitted method: test-time adaptation belongs to the test only
        self.val_acc.update(self._eval_logits("val", self.train_classes, images, adapt=False), labels)

    def on_validation_epoch_end(self) -> None:
        self.log("val/acc", self.val_acc.compute() * 100, prog_bar=True)
        self.val_acc.reset()
        self._text_features.clear()

    def on_test_epoch_start(self) -> None:
        self._text_features.clear()

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        images, labels = batch
        name = self.eval_names[dataloader_idx]
        logits = self._eval_logits(name, self.eval_classes[name], images)  # (B, C)
        self.test_counts[name].update(logits, labels)
        self.test_calibration[name].update(log_probabilities(logits, self.method.logits_are_log_probs), labels)

    def on_test_epoch_end(self) -> None:
        """Accuracy (%) = 100 * correct / total from integer counts, ECE (%) and NLL (nats), each summed over DDP
        processes before it is computed."""
        for name in self.eval_names:
            correct, total = self.test_counts[name].compute()
            self.test_results[name] = 100.0 * int(correct) / max(int(total), 1)
            self.test_calibration_results[name] = self.test_calibration[name].compute()
            self.test_counts[name].reset()
            self.test_calibration[name].reset()
        self._text_features.clear()
        if self.method.test_time_adaptive:
            self.method.reset()  # back to the fitted state (what the export holds)

    # -- checkpoints: learned tensors + training state only ------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith("backbone.")]:
            del state[key]
        checkpoint["prompt_learning"] = {**self.run_identity, "method": self.method.name}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        expected = {f"method.{k}" for k in self.method.state_dict()}
        missing = sorted(expected - set(checkpoint["state_dict"]))
        if missing:
            raise ConfigurationError(f"The checkpoint lacks the learned tensors {missing}: it was saved by another "
                                     f"method or config. Resume with the config that wrote it, or pass resume=false.")
