"""Progress of long waits: the caches' phases say what they do and how far they are, the Lightning bar shows
no ``v_num`` and no ``0.00it/s``, logs get plain lines, and the one switch silences all of it."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from PIL import Image
from rich.progress import Progress as RichProgress
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchvision.transforms import Compose, Resize, ToTensor

from prompt_learning import progress
from prompt_learning.data.eval_cache import decoded_images
from prompt_learning.data.feature_cache import cached_image_features
from prompt_learning.data.types import Datum
from prompt_learning.engine.progress import LineProgressBar, RateColumn, RunRichProgressBar, run_progress_bar
from prompt_learning.engine.stages import tracked
from prompt_learning.progress import format_duration, format_rate, progress_setting, track

ITEMS = [Datum(f"img{i}", i % 2, "a" if i % 2 == 0 else "b") for i in range(6)]


def load_image(ref: str) -> Image.Image:
    return Image.new("RGB", (20, 16), (10 * int(ref[3:]), 0, 0))


@pytest.fixture
def immediate(monkeypatch):
    """Progress lines from the first moment (the real threshold keeps quick phases silent)."""
    monkeypatch.setattr(progress, "PLAIN_FIRST_LINE_S", 0.0)
    with progress_setting(True):
        yield


def test_feature_cache_reports_its_phase_and_count(immediate, tmp_path, capsys) -> None:
    features = cached_image_features(lambda x: x.flatten(1)[:, :4], {"model": "test"}, ITEMS, load_image,
                                     Compose([Resize(8), ToTensor()]), tmp_path, torch.device("cpu"), batch_size=4,
                                     name="base")
    assert features.shape == (6, 4)
    err = capsys.readouterr().err
    assert "Encoding 6 evaluation images (base) into the feature cache: 6/6" in err
    assert "img/s" in err and "\r" not in err and "\x1b[" not in err  # a log gets plain lines


def test_eval_cache_reports_decoding(immediate, tmp_path, capsys) -> None:
    decoded_images([d.ref for d in ITEMS], load_image, Resize(8), tmp_path)
    assert "Decoding 6 evaluation images into the cache: 6/6" in capsys.readouterr().err


def test_progress_is_silent_when_switched_off_or_on_other_ranks(immediate, tmp_path, capsys, monkeypatch) -> None:
    with progress_setting(False):
        decoded_images([d.ref for d in ITEMS], load_image, Resize(8), tmp_path / "a")
        list(track(range(3), "Counting"))
    monkeypatch.setenv("LOCAL_RANK", "1")  # a second DDP process
    decoded_images([d.ref for d in ITEMS], load_image, Resize(8), tmp_path / "b")
    assert capsys.readouterr().err == ""


def test_quick_phases_print_nothing(tmp_path, capsys) -> None:
    with progress_setting(True):
        decoded_images([d.ref for d in ITEMS], load_image, Resize(8), tmp_path)
    assert capsys.readouterr().err == ""


def test_rate_is_never_zero_its_per_second() -> None:
    assert format_rate(0, 0.0) == "" and format_rate(0, 12.0) == ""  # unknown: nothing, not 0.00it/s
    assert format_rate(38, 10.0) == "3.8 it/s"
    assert format_rate(1, 63.0) == "63.0 s/it"  # slow steps read as seconds per step
    assert format_rate(500, 2.0, "img") == "250 img/s"
    assert [format_duration(s) for s in (4.23, 35, 185, 3723)] == ["4.2 s", "35 s", "3:05", "1:02:03"]
    with RichProgress(RateColumn(), auto_refresh=False, disable=True) as bar:
        task = bar.add_task("Testing", total=1)
        assert str(RateColumn().render(bar.tasks[task])) == ""  # the first batch has not finished
    columns = RunRichProgressBar().configure_columns(None)
    assert not [c for c in columns if type(c).__name__ == "ProcessingSpeedColumn"]
    assert any(isinstance(c, RateColumn) for c in columns)


@pytest.mark.parametrize("bar", [RunRichProgressBar, LineProgressBar])
def test_lightning_bar_metrics_leave_out_v_num(bar, tmp_path) -> None:
    trainer = L.Trainer(logger=CSVLogger(tmp_path), callbacks=[bar()], enable_checkpointing=False)
    trainer.progress_bar_callback._trainer = trainer
    metrics = trainer.progress_bar_callback.get_metrics(trainer, None)
    assert "v_num" in L.pytorch.callbacks.progress.progress_bar.get_standard_metrics(trainer)
    assert "v_num" not in metrics


def test_run_progress_bar_choice() -> None:
    assert run_progress_bar(False) == []
    own = RunRichProgressBar()
    assert run_progress_bar(True, [own]) == []  # the config's own bar is used instead
    assert isinstance(run_progress_bar(True)[0], LineProgressBar)  # pytest captures stdout: not a terminal


class _Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(3, 2)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self.layer(x), y)
        self.log("loss", loss, prog_bar=True, on_epoch=True, on_step=False)
        return loss

    def test_step(self, batch, batch_idx):
        return None

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_plain_lightning_bar_writes_lines_for_training_and_testing(immediate, tmp_path, capsys) -> None:
    data = DataLoader(TensorDataset(torch.randn(8, 3), torch.randint(0, 2, (8,))), batch_size=4)
    trainer = L.Trainer(max_epochs=2, logger=CSVLogger(tmp_path), callbacks=[LineProgressBar()],
                        enable_checkpointing=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(_Tiny(), data)
    trainer.test(trainer.lightning_module, data, verbose=False)
    err = capsys.readouterr().err
    assert "Training: 4/4 batches in" in err and "epoch 2/2; loss" in err
    assert "Testing: 8/8 images in" in err and "img/s" in err  # testing counts images (TPT: seconds each)
    assert "v_num" not in err and "0.00it/s" not in err and "\r" not in err and "\x1b[" not in err


def test_stage_loaders_count_images(immediate, capsys) -> None:
    loader = DataLoader(TensorDataset(torch.zeros(10, 1), torch.zeros(10)), batch_size=4, drop_last=True)
    batches = tracked(loader, "coop prepare: training images")
    assert len(batches) == 2 and batches.batch_size == 4  # still looks like the loader
    assert sum(len(y) for _, y in batches) == 8
    assert "coop prepare: training images: 8/8" in capsys.readouterr().err


def test_nested_phases_show_the_inner_one_then_the_outer_summary(immediate, capsys) -> None:
    with progress.Progress("linear_probe fit"):
        assert list(track(range(3), "linear_probe fit: training images", unit="img")) == [0, 1, 2]
    err = capsys.readouterr().err
    assert "linear_probe fit: training images: 3/3 in" in err
    assert "linear_probe fit: done in" in err.splitlines()[-1]
    assert progress._open == []  # every phase closed
