"""No host reads of device values in the training loop (issue 8 part 5; docs/performance.md).

On a GPU, reading a tensor's value on the host (``.item()``, ``int()``, ``bool()``, ``.tolist()``, ``nonzero``,
``unique``, boolean indexing) waits for every queued kernel: a step that does it serialises host and device,
and cannot be replayed as a CUDA graph. On this CPU no read is a sync, so :class:`DeviceReads` tracks which
tensors a GPU run would hold on the device: all of them except the class prompts' EOT positions, which are
kept on the host on purpose (``ClassTokens.eot``), and whatever is computed from those alone.
"""

from __future__ import annotations

import traceback
import weakref

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from prompt_learning.engine.run import train_and_test
from prompt_learning.methods import create_method, list_methods
from prompt_learning.methods.mocoop import MoCoOp
from prompt_learning.prompts import class_prompts

from .conftest import CLASSES, teacher_keys

READ_OPS = {"_local_scalar_dense", "is_nonzero", "equal", "nonzero", "masked_select", "unique", "_unique",
            "_unique2", "unique_dim", "unique_consecutive"}
"""ATen operators whose result depends on tensor values the host must see (``item``/``bool``/``int`` go
through ``_local_scalar_dense``; the others size their output by the data)."""


class DeviceReads(TorchDispatchMode):
    """Records every read of a would-be-device tensor on the host, with the call site (data loading, which
    runs in CPU worker processes in a real run, is left out)."""

    active: DeviceReads | None = None

    def __init__(self) -> None:
        super().__init__()
        self._host: dict[int, weakref.ref] = {}
        self.reads: list[str] = []

    def mark_host(self, tensor: torch.Tensor) -> None:
        self._host[id(tensor)] = weakref.ref(tensor)

    def is_host(self, tensor: torch.Tensor) -> bool:
        ref = self._host.get(id(tensor))
        return ref is not None and ref() is tensor

    def __enter__(self):
        DeviceReads.active = self
        return super().__enter__()

    def __exit__(self, *exc):
        DeviceReads.active = None
        return super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        inputs = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        on_host = bool(inputs) and all(self.is_host(t) for t in inputs)
        name = func._overloadpacket.__name__
        bool_index = name in ("index", "index_put", "index_put_") and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in tree_leaves(args[1]))
        if (name in READ_OPS or bool_index) and not on_host:
            stack = traceback.extract_stack()[:-1]
            frames = [f for f in stack if "/torch/" not in f.filename]
            if not any("/torch/utils/data/" in f.filename for f in stack):
                self.reads.append(f"{name} at " + " <- ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno}"
                                                              for f in frames[-4:]))
        out = func(*args, **kwargs)
        if on_host:
            for t in tree_leaves(out):
                if isinstance(t, torch.Tensor):
                    self.mark_host(t)
        return out


@pytest.fixture
def host_eot(monkeypatch):
    """Marks each class set's EOT positions as host tensors for the active :class:`DeviceReads`."""
    tokens = class_prompts.ClassPrompts.tokens

    def marked(self, classes):
        t = tokens(self, classes)
        if DeviceReads.active is not None:
            DeviceReads.active.mark_host(t.eot)
        return t

    monkeypatch.setattr(class_prompts.ClassPrompts, "tokens", marked)
    # MoCoOp tokenizes its experts' class prompts itself, keeping the EOT positions on the host likewise
    expert_tokens = MoCoOp._class_tokens

    def marked_expert_tokens(self, classes, period=False):
        t = expert_tokens(self, classes, period)
        if DeviceReads.active is not None:
            DeviceReads.active.mark_host(t.eot)
        return t

    monkeypatch.setattr(MoCoOp, "_class_tokens", marked_expert_tokens)


def test_device_reads_sees_item_and_masks_but_not_host_kept_tensors(host_eot) -> None:
    x, host = torch.randn(4), torch.tensor([3, 1, 2])
    with DeviceReads() as probe:
        probe.mark_host(host)
        int(host.max()), host.cpu().tolist(), torch.unique(host), (host > 1).nonzero()  # host-only: fine
        y = (x * 2).sum()
        float(y), x[x > 0], bool((x > 0).any())
    assert [r.split(" at ")[0] for r in probe.reads] == ["_local_scalar_dense", "index", "_local_scalar_dense"]


GRADIENT_METHODS = sorted(n for n, c in list_methods().items() if c.trainable and not c.fits_on_features)
DECLARED_READS = {"mocoop": ("_unique2", "mocoop.py")}
"""Reads a method makes on purpose, (operator, file): MoCoOp reads which experts the batch routes to, so that only
those are encoded (at batch 1, 2 of E experts' class prompts instead of all E; docs/methods/mocoop.md)."""


@pytest.mark.parametrize("name", GRADIENT_METHODS)
def test_training_step_reads_nothing_back_from_the_device(name, tiny_backbone, images, host_eot, kd_teacher) -> None:
    """Forward, loss, backward, the method's gradient hook (ProGrad) and the optimizer step: no host reads.
    The first step fills the class-prompt cache (one read per class set, ever) and is not checked."""
    torch.manual_seed(0)
    method = create_method({"name": name, **teacher_keys(name, kd_teacher)}, tiny_backbone, CLASSES)
    optimizer = torch.optim.SGD(method.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    labels = torch.tensor([0, 1, 2])

    def step(inputs: torch.Tensor) -> None:
        optimizer.zero_grad()
        out = method(inputs, CLASSES) if inputs.dim() == 4 else method.forward_features(inputs, CLASSES)
        loss = torch.stack(list(method.loss(out, labels).values())).sum()
        loss.backward()
        method.after_backward()
        optimizer.step()

    step(images)
    with DeviceReads() as probe:
        step(images)
        if not (method.touches_image_tower or method.reads_hidden_states):  # the step on cached training views
            step(torch.nn.functional.normalize(torch.randn(3, tiny_backbone.embed_dim), dim=-1))
    declared = DECLARED_READS.get(name)
    undeclared = [r for r in probe.reads if declared is None or not r.startswith(declared[0])
                  or not r.rsplit(" <- ", 1)[-1].split(" at ")[-1].startswith(f"{declared[1]}:")]
    assert undeclared == []


def test_lightning_training_loop_reads_do_not_grow_with_steps(run_cfg, host_eot) -> None:
    """Through Lightning (logging, progress bar, checkpoints): doubling the training steps of an epoch adds
    no host reads, so none happens per step; what remains is per epoch, per evaluation or per log line."""
    counts = []
    for shots in (2, 4):
        cfg = run_cfg(f"shots={shots}", "trainer.max_epochs=1", "trainer.enable_progress_bar=true",
                      "trainer.log_every_n_steps=1000", "data.batch_size=4")
        with DeviceReads() as probe:
            train_and_test(cfg)
        counts.append(len(probe.reads))
    assert counts[0] == counts[1], counts
