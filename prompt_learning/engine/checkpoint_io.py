"""Checkpoints written whole or not at all.

Lightning's own writer opens the final file and writes into it (through a temporary file in the system's
temporary directory when that is another disk), so a disk that fills up, or a kill, mid-write leaves a
truncated ``last.ckpt`` that the next run fails to resume from. :class:`AtomicCheckpointIO` writes beside
the final file, fsyncs and renames (:func:`prompt_learning.files.atomic_file`): the previous checkpoint
stays intact until the new one is complete, and a failed write leaves no temporary file.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from prompt_learning.files import atomic_file


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` into a temporary file beside the checkpoint, then an atomic rename (local paths; a
    remote ``scheme://`` path goes through Lightning's writer)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        buffer = io.BytesIO()  # serialised first: a write error surfaces as the OSError it is
        torch.save(checkpoint, buffer)
        with atomic_file(Path(path)) as f:
            f.write(buffer.getbuffer())
