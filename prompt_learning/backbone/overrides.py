"""Trainable copies of named backbone tensors, swapped into the shared frozen backbone only while a method runs.

A :class:`~prompt_learning.backbone.FrozenCLIP` is shared: the tests' session backbone, the runs of a sweep in one
process, the zero-shot reference of a run. It is never trained. A method that fine-tunes a few of its tensors (MoCoOp:
the LayerNorms of the ViT blocks) declares an allow-list of ``fnmatch`` patterns over open_clip's parameter names
(``PromptMethod.unfreezes_backbone``, e.g. ``visual.transformer.resblocks.*.ln_1.*``). :class:`BackboneOverrides`
then holds a trainable **copy** of each matching tensor as its own parameter, so the copies are in the method's
``parameters()``, ``state_dict()``, checkpoints and export, and :meth:`BackboneOverrides.applied` puts them in place
of the originals for the duration of a ``with`` block, restoring the originals on exit, after an exception too.
The backbone's own tensors are never written: the backbone object stays bitwise unchanged and everything else that
shares it sees the original weights. A tensor outside the allow-list cannot be selected (``ConfigurationError``).

The swap replaces the entries of the owning modules' ``_parameters``, so every path that reads the weights through
the module (open_clip's ``encode_image``, ``towers.run_blocks``, the lean blocks) runs the copies.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from torch import Tensor, nn

from prompt_learning.errors import ConfigurationError

VIT_BLOCK_NORMS = ("visual.transformer.resblocks.*.ln_1.*", "visual.transformer.resblocks.*.ln_2.*")
"""Both LayerNorms (weight and bias) of every block of open_clip's ViT image tower."""


def matching(names: Sequence[str], patterns: Sequence[str]) -> list[str]:
    """The names (in their order) that match any of ``patterns`` (``fnmatch``: ``*`` also spans dots)."""
    return [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]


def _key(name: str) -> str:
    """A backbone parameter name as a parameter name of this module (which may not contain dots)."""
    return name.replace(".", "/")


class BackboneOverrides(nn.Module):
    """Trainable copies of the backbone tensors selected by ``select`` (default: all of ``allow``).

    Args:
        backbone: the shared frozen CLIP; only read (at construction) and swapped into (inside ``applied``).
        allow: the allow-list, ``fnmatch`` patterns over ``backbone.model.named_parameters()`` names. Every
            pattern must match at least one tensor of this backbone.
        select: the patterns of the tensors to copy; each tensor they match must also match ``allow``.
    """

    def __init__(self, backbone: nn.Module, allow: Sequence[str], select: Sequence[str] | None = None) -> None:
        super().__init__()
        object.__setattr__(self, "backbone", backbone)  # a reference, not a registered submodule
        model = backbone.model
        names = [n for n, _ in model.named_parameters()]
        for pattern in allow:
            if not matching(names, [pattern]):
                raise ConfigurationError(f"No tensor of backbone {getattr(backbone, 'model_name', '?')!r} matches "
                                         f"{pattern!r}, which the method fine-tunes (e.g. the LayerNorms of a ViT "
                                         f"image tower); choose a backbone that has it, or turn the fine-tuning off.")
        chosen = matching(names, select if select is not None else allow)
        refused = [n for n in chosen if not matching([n], allow)]
        if refused:
            raise ConfigurationError(f"Backbone tensors {refused[:3]} are outside the method's allow-list "
                                     f"{list(allow)} of backbone tensors it may train; only those can be unfrozen.")
        if not chosen:
            raise ConfigurationError(f"No backbone tensor matches {list(select or [])}; nothing to fine-tune.")
        self.names: tuple[str, ...] = tuple(chosen)
        params = dict(model.named_parameters())
        for name in chosen:
            self.register_parameter(_key(name), nn.Parameter(params[name].detach().clone()))

    def copies(self) -> dict[str, Tensor]:
        """The trainable copies by backbone parameter name."""
        return {name: self.get_parameter(_key(name)) for name in self.names}

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The backbone runs the copies inside the block; its own tensors are back in place when it ends."""
        model = self.backbone.model
        saved: list[tuple[nn.Module, str, nn.Parameter]] = []
        try:
            for name in self.names:
                owner, attr = name.rpartition(".")[::2]
                module = model.get_submodule(owner)
                saved.append((module, attr, module._parameters[attr]))
                module._parameters[attr] = self._parameters[_key(name)]
            yield
        finally:
            for module, attr, original in reversed(saved):  # nested blocks unwind in order
                module._parameters[attr] = original

    def extra_repr(self) -> str:
        return f"{len(self.names)} backbone tensors ({sum(p.numel() for p in self.parameters())} values)"
