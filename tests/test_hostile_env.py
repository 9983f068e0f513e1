"""Hostile environments: a read-only, full or misplaced output directory, unwritable caches, a killed write,
two runs on one run directory. Each ends in one ``error:`` line naming the path and the fix (or, for a
cache, one warning and a run without it), and no result is ever lost or silently replaced.

A real small tmpfs stands for a full or read-only disk where this process may mount one (root in a
container); elsewhere the disk's answer is injected (``ENOSPC`` from ``fsync``, a 0555 directory). Lock
holders are helper processes that import only :mod:`prompt_learning.run_lock` (well under a second)."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import OmegaConf
from PIL import Image
from torchvision.transforms import Compose, Resize, ToTensor

from prompt_learning.config import compose_config
from prompt_learning.data import eval_cache, feature_cache
from prompt_learning.data.train_views import cached_train_views
from prompt_learning.data.types import Datum
from prompt_learning.engine import orchestrate
from prompt_learning.engine.run import evaluate, run_point
from prompt_learning.errors import RunDirectoryInUse, StorageError
from prompt_learning.files import atomic_directory, atomic_file, atomic_write_json
from prompt_learning.run_lock import LOCK_NAME, RunDirectoryLocked, RunLock, read_holder
from prompt_learning.user_errors import Place, exit_on_user_error, storage_error_message

PACKAGE = Path(__file__).parents[1] / "prompt_learning"
HOST = socket.gethostname()
STARTED = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00"
FAST = ["backbone=tiny_test", "trainer.max_epochs=1", "shots=2", "logger=none", "dataset.test_per_class=2",
        "dataset.val_per_class=1", "protocol.eval_zero_shot=false", "trainer.enable_progress_bar=false"]
SMALL = ["shots=1", "dataset.image_size=32", "dataset.test_per_class=1", "protocol.eval_zero_shot=false"]  # quick
LIGHT = "import sys, types\npkg = types.ModuleType('prompt_learning'); pkg.__path__ = [sys.argv[1]]\n" \
        "sys.modules['prompt_learning'] = pkg\n"  # the package's modules without its __init__ (torch)


# -- disks ---------------------------------------------------------------------------------------------------
def mount_tmpfs(target: Path, options: str) -> bool:
    """Mount a tmpfs at ``target`` when this process may (root in a container); False otherwise, or when
    ``PL_TESTS_NO_MOUNT`` is set (to run the injected variants where mounting works)."""
    target.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None or os.environ.get("PL_TESTS_NO_MOUNT"):
        return False
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True)
    return proc.returncode == 0


def unmount(target: Path) -> None:
    subprocess.run(["umount", "-l", str(target)], capture_output=True)


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A directory nobody may write into, and the words of the error writing there gives."""
    target = tmp_path / "ro"
    if mount_tmpfs(target, "ro,size=64k"):
        yield target, "read-only file system"
        unmount(target)
    elif os.geteuid() != 0:
        target.chmod(0o555)
        yield target, "permission denied"
        target.chmod(0o755)
    else:
        pytest.skip("root without mount: no directory is read-only here")


class Disk:
    """A directory on a small disk that :meth:`fill` makes full: a real 4 MiB tmpfs where mounting is
    allowed, else ``ENOSPC`` injected into ``fsync`` (which every atomic write calls)."""

    def __init__(self, path: Path, mounted: bool, monkeypatch: pytest.MonkeyPatch) -> None:
        self.path, self.mounted, self.monkeypatch = path, mounted, monkeypatch

    def fill(self) -> None:
        if not self.mounted:
            def full(fd: int) -> None:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            self.monkeypatch.setattr(os, "fsync", full)
            return
        with contextlib.suppress(OSError), open(self.path / "filler", "wb") as f:
            while True:
                f.write(b"\0" * 65536)
                f.flush()

    def free(self) -> None:
        self.monkeypatch.undo()
        (self.path / "filler").unlink(missing_ok=True)


@pytest.fixture
def disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Disk]:
    target = tmp_path / "disk"
    mounted = mount_tmpfs(target, "size=4m")
    yield Disk(target, mounted, monkeypatch)
    if mounted:
        unmount(target)


def no_temporary_files(root: Path) -> bool:
    return not [p for p in root.rglob("*") if p.name.endswith(".pl-tmp")]


# -- lock holders in other processes ---------------------------------------------------------------------
@contextlib.contextmanager
def holding(run_dir: Path, task: str = "train") -> Iterator[subprocess.Popen]:
    """Another process holding ``run_dir``'s lock until the block ends."""
    code = LIGHT + textwrap.dedent("""
        from prompt_learning.run_lock import RunLock
        lock = RunLock(sys.argv[2], sys.argv[3]).acquire()
        print("held", flush=True)
        sys.stdin.read()
        lock.release()
    """)
    proc = subprocess.Popen([sys.executable, "-c", code, str(PACKAGE), str(run_dir), task], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def container_of(cfg) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)


def fake_run(calls: list) -> callable:
    """A train_and_test that only records that it ran, holding the lock, and writes results.json."""
    def train_and_test(spec, callbacks=()):
        run_dir = Path(spec.paths.run_dir)
        calls.append(read_holder(run_dir / LOCK_NAME))
        record = {"fingerprint": "fake", "hm": 1.0}
        atomic_write_json(run_dir / "results.json", record)
        return record

    return train_and_test


# -- class 5: one run per run directory ------------------------------------------------------------------
def test_a_second_run_on_a_held_run_directory_is_refused_and_writes_nothing(run_cfg) -> None:
    cfg = run_cfg("skip_done=false")
    run_dir = Path(cfg.paths.run_dir)
    run_dir.mkdir(parents=True)
    (run_dir / "results.json").write_text('{"theirs": true}')
    with holding(run_dir) as holder:
        status = run_point(cfg)
    assert status["status"] == "failed" and isinstance(status["exception"], RunDirectoryInUse)
    assert re.search(rf"{re.escape(str(run_dir))} is in use by pid {holder.pid} on host {re.escape(HOST)} since "
                     rf"{STARTED} \(train\); a second run there would overwrite its results\. Wait for it to finish, "
                     r"or set paths.output_dir=<another directory> to run there\.", status["error"]), status["error"]
    assert (run_dir / "results.json").read_text() == '{"theirs": true}'  # the holder's results, untouched
    assert sorted(p.name for p in run_dir.iterdir()) == ["results.json"]  # no failed.json, no lock left
    with RunLock(run_dir) as lock:  # the holder's exit released it
        assert lock.held


def test_the_train_command_refuses_a_held_run_directory_in_one_line(tmp_path, capsys, keep_logging) -> None:
    from prompt_learning.cli import train

    args = [*FAST, f"paths.output_dir={tmp_path}"]
    run_dir = Path(compose_config(args).paths.run_dir)
    with holding(run_dir) as holder, pytest.raises(SystemExit) as exit_:
        train.main(args)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"error: {run_dir} is in use by pid {holder.pid} on host {HOST} since "), err
    assert not (run_dir / "results.json").exists() and not (run_dir / "failed.json").exists()


def test_two_launchers_of_one_multirun_point_run_it_once(tmp_path, capsys, keep_logging) -> None:
    from prompt_learning.cli import train

    args = [*FAST, f"paths.output_dir={tmp_path}"]
    run_dir = Path(compose_config(args).paths.run_dir)
    with holding(run_dir) as holder, pytest.raises(SystemExit) as exit_:
        train.main(["-m", *args, "seed=1"])  # the other launcher holds the point: this one reports and goes on
    out = capsys.readouterr().out
    assert exit_.value.code == 1
    assert f"FAILED {run_dir}: RunDirectoryLocked: {run_dir} is in use by pid {holder.pid} on host {HOST}" in out
    assert "sweep: 0 done, 0 skipped, 1 failed" in out and not (run_dir / "failed.json").exists()


def test_a_stale_lock_of_a_dead_process_is_taken_over(run_cfg, monkeypatch, caplog) -> None:
    cfg = run_cfg()
    run_dir = Path(cfg.paths.run_dir)
    run_dir.mkdir(parents=True)
    pid = dead_pid()
    stale = {"pid": pid, "host": HOST, "started_at": "2026-01-01T00:00:00+00:00", "task": "train"}
    (run_dir / LOCK_NAME).write_text(json.dumps(stale))  # a run killed with SIGKILL leaves this
    calls: list = []
    monkeypatch.setattr(orchestrate, "train_and_test", fake_run(calls))
    with caplog.at_level(logging.WARNING, "prompt_learning.run_lock"):
        assert run_point(cfg)["status"] == "done"
    assert calls[0]["pid"] == os.getpid() and calls[0]["host"] == HOST  # it ran holding the lock
    assert [r.getMessage() for r in caplog.records] == [
        f"Taking over the lock {run_dir / LOCK_NAME} left by pid {pid} on host {HOST} since "
        f"2026-01-01T00:00:00+00:00: that process is no longer running."]
    assert not (run_dir / LOCK_NAME).exists()  # released at the end


def test_a_lock_left_on_another_host_is_refused_with_the_way_out(run_cfg, monkeypatch) -> None:
    cfg = run_cfg()
    run_dir = Path(cfg.paths.run_dir)
    run_dir.mkdir(parents=True)
    (run_dir / LOCK_NAME).write_text(json.dumps({"pid": 4242, "host": "gpu-node-7", "started_at": "2026-01-01T00:00"
                                                                                                 ":00+00:00"}))
    calls: list = []
    monkeypatch.setattr(orchestrate, "train_and_test", fake_run(calls))
    status = run_point(cfg)
    assert not calls and status["status"] == "failed"
    assert status["error"] == (
        f"RunDirectoryLocked: {run_dir} is locked by pid 4242 on host gpu-node-7 since 2026-01-01T00:00:00+00:00 "
        f"(a run), on another host, which this host cannot check. If that run is no longer running, delete "
        f"{run_dir / LOCK_NAME} and run again; else wait for it, or set paths.output_dir=<another directory> to "
        f"run there.")
    (run_dir / LOCK_NAME).unlink()  # the way out it names
    assert run_point(cfg)["status"] == "done"


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit])
def test_an_interrupted_run_releases_its_lock(run_cfg, monkeypatch, interrupt) -> None:
    cfg = run_cfg()
    run_dir = Path(cfg.paths.run_dir)

    def interrupted(spec, callbacks=()):
        assert read_holder(run_dir / LOCK_NAME)["pid"] == os.getpid()
        raise interrupt()  # Ctrl-C (Lightning turns it into SystemExit during fit)

    monkeypatch.setattr(orchestrate, "train_and_test", interrupted)
    with pytest.raises(interrupt):
        run_point(cfg)
    assert not (run_dir / LOCK_NAME).exists() and not (run_dir / "failed.json").exists()
    with RunLock(run_dir) as lock:
        assert lock.held


def test_eval_refuses_a_run_directory_that_is_training(run_cfg) -> None:
    cfg = run_cfg()
    run_dir = Path(cfg.paths.run_dir)
    run_dir.mkdir(parents=True)
    (run_dir / "results.json").write_text(json.dumps({"config": container_of(cfg)}))  # an earlier attempt's
    with holding(run_dir, "train") as holder, pytest.raises(RunDirectoryLocked, match=(
            rf"in use by pid {holder.pid} on host {re.escape(HOST)} since {STARTED} \(train\); a second run there "
            r"would overwrite its results\. Wait for it to finish\.$")):
        evaluate(run_dir)
    assert not (run_dir / "eval.json").exists()


# -- class 4: environment faults -------------------------------------------------------------------------
def test_a_read_only_output_dir_is_one_line_before_any_work(read_only_dir, run_cfg, capsys, keep_logging) -> None:
    from prompt_learning.cli import train

    ro, words = read_only_dir
    with pytest.raises(SystemExit) as exit_:
        train.main([*FAST, f"paths.output_dir={ro}/outputs"])
    fix = "Set" if words == "read-only file system" else f"Make {ro} writable for this user or set"
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (f"error: cannot write {ro}/outputs: {words}. {fix} "
                                       f"paths.output_dir=<a writable directory> (or the PL_OUTPUT_DIR variable).\n")
    status = run_point(run_cfg(f"paths.output_dir={ro}/outputs"))  # the API: the same, as a failed status
    assert isinstance(status["exception"], StorageError) and "paths.output_dir=<a writable" in status["error"]


def test_an_output_dir_that_is_a_file_is_one_line(tmp_path, capsys, keep_logging) -> None:
    from prompt_learning.cli import train

    (tmp_path / "outputs").write_text("not a directory")
    with pytest.raises(SystemExit) as exit_:
        train.main([*FAST, f"paths.output_dir={tmp_path}/outputs"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        f"error: {tmp_path}/outputs is a file, where a directory is needed. Move {tmp_path}/outputs away or set "
        f"paths.output_dir=<a directory> (or the PL_OUTPUT_DIR variable).\n")


class FillTheDisk(Callback):
    """The disk fills up when ``epoch`` starts: its checkpoint cannot be written."""

    def __init__(self, disk: Disk, epoch: int) -> None:
        self.disk, self.epoch = disk, epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            self.disk.fill()


def test_a_disk_that_fills_during_a_checkpoint_loses_nothing(disk, run_cfg) -> None:
    cfg = run_cfg(f"paths.output_dir={disk.path}", *SMALL)
    run_dir = Path(cfg.paths.run_dir)
    status = run_point(cfg, callbacks=[FillTheDisk(disk, epoch=1)])
    assert status["status"] == "failed" and isinstance(status["exception"], StorageError)
    assert re.fullmatch(rf"StorageError: cannot write {re.escape(str(run_dir))}/\S+: No space left on device\. Free "
                        r"space on its disk or set paths.output_dir=<a directory with free space> \(or the "
                        r"PL_OUTPUT_DIR variable\)\.", status["error"]), status["error"]
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)  # epoch 0's, whole
    assert saved["epoch"] == 0
    assert no_temporary_files(disk.path) and not (run_dir / LOCK_NAME).exists()
    assert not (run_dir / "failed.json").exists()  # the full disk took it too: the status says it all
    disk.free()
    again = run_point(cfg)  # resumes from the intact checkpoint
    assert again["status"] == "done" and again["record"]["epochs_trained"] == 2
    assert (run_dir / "results.json").is_file() and no_temporary_files(disk.path)


def test_a_disk_full_from_the_start_is_one_line_before_any_work(disk, capsys, keep_logging) -> None:
    from prompt_learning.cli import train

    disk.fill()
    with pytest.raises(SystemExit) as exit_:
        train.main([*FAST, f"paths.output_dir={disk.path}"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert re.fullmatch(rf"error: cannot write {re.escape(str(disk.path))}\S*: No space left on device\. Free space on "
                        r"its disk or set paths.output_dir=<a directory with free space> \(or the PL_OUTPUT_DIR "
                        r"variable\)\.\n", err), err
    assert not list(disk.path.rglob("results.json")) and not list(disk.path.rglob("failed.json"))


@pytest.mark.parametrize("what", ["results.json", "export", "failed.json"])
def test_a_full_disk_keeps_the_previous_file_whole(disk, what) -> None:
    run_dir = disk.path / "run"
    atomic_write_json(run_dir / "results.json", {"hm": 1.0})
    with atomic_directory(run_dir / "export") as export:
        (export / "prompts.safetensors").write_bytes(b"old tensors")
        (export / "prompt_config.json").write_text("{}")
    atomic_write_json(run_dir / "failed.json", {"error": "the first"})
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    disk.fill()
    if what == "failed.json":
        status = orchestrate.record_failure(run_dir, ValueError("the second"))  # returns; cannot raise
        assert status["status"] == "failed" and status["error"] == "ValueError: the second"
    else:
        with pytest.raises(OSError) as raised:
            if what == "results.json":
                atomic_write_json(run_dir / "results.json", {"hm": 2.0, "pad": "x" * 100_000})
            else:
                with atomic_directory(run_dir / "export") as export:
                    with atomic_file(export / "prompts.safetensors") as f:
                        f.write(b"new tensors" * 10_000)
        written = run_dir / what / "prompts.safetensors" if what == "export" else run_dir / what
        assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(written)
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before
    assert no_temporary_files(run_dir)


def test_leftovers_of_a_killed_write_are_removed_on_the_next_start(run_cfg, monkeypatch) -> None:
    cfg = run_cfg()
    run_dir = Path(cfg.paths.run_dir)
    atomic_write_json(run_dir / "results.json", {"hm": 1.0})
    code = LIGHT + textwrap.dedent("""
        import os, signal
        from pathlib import Path
        from prompt_learning.files import atomic_file
        with atomic_file(Path(sys.argv[2]) / "results.json") as f:
            f.write(b'{"half": ')
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    killed = subprocess.run([sys.executable, "-c", code, str(PACKAGE), str(run_dir)])
    assert killed.returncode == -signal.SIGKILL
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / ".last.ckpt.99-abcd.pl-tmp").write_bytes(b"half a checkpoint")
    (run_dir / ".export.old.pl-tmp").mkdir()  # killed between the two renames of an export swap
    (run_dir / ".export.old.pl-tmp" / "prompts.safetensors").write_bytes(b"tensors")
    assert json.loads((run_dir / "results.json").read_text()) == {"hm": 1.0}  # the kill lost nothing
    assert len(list(run_dir.glob(".results.json.*.pl-tmp"))) == 1
    monkeypatch.setattr(orchestrate, "train_and_test", fake_run([]))
    assert run_point(cfg)["status"] == "done"
    assert no_temporary_files(run_dir)
    assert (run_dir / "export" / "prompts.safetensors").read_bytes() == b"tensors"  # moved back, not lost


def test_a_cut_short_results_json_is_run_again_with_a_warning(run_cfg, monkeypatch, caplog) -> None:
    cfg = run_cfg()
    run_dir = Path(cfg.paths.run_dir)
    run_dir.mkdir(parents=True)
    (run_dir / "results.json").write_text('{"method": "coop", "metrics": {')  # written in place, then killed
    monkeypatch.setattr(orchestrate, "train_and_test", fake_run([]))
    with caplog.at_level(logging.WARNING, "prompt_learning.engine"):
        assert run_point(cfg)["status"] == "done"
    assert json.loads((run_dir / "results.json").read_text()) == {"fingerprint": "fake", "hm": 1.0}
    assert [r.getMessage() for r in caplog.records] == [
        f"Running {run_dir} again: its results.json cannot be read (not valid JSON at line 1, column 32); the new "
        "run's replaces it."]


def test_an_unwritable_cache_dir_is_one_warning_and_no_cache(read_only_dir, tmp_path, caplog) -> None:
    ro, words = read_only_dir
    items = [Datum(f"img{i}", i % 2, "ab"[i % 2]) for i in range(5)]

    def load_image(ref: str) -> Image.Image:
        return Image.new("RGB", (20, 16), (40 * int(ref[3:]), 0, 0))

    expected = eval_cache.decoded_images([d.ref for d in items], load_image, Resize(8), tmp_path / "ok")
    caplog.clear()  # the reference's own info line, when an earlier test left the root logger at INFO
    with caplog.at_level(logging.WARNING, "prompt_learning.data"):
        for _ in range(2):
            got = eval_cache.decoded_images([d.ref for d in items], load_image, Resize(8), ro / "eval_images")
            assert np.array_equal(got, expected)
            features = feature_cache.cached_image_features(lambda x: x.flatten(1)[:, :4], {"m": 1}, items,
                                                           load_image, Compose([Resize(8), ToTensor()]),
                                                           ro / "image_features", torch.device("cpu"))
            assert features.shape == (5, 4)
            views, written = cached_train_views(lambda x: x.flatten(1)[:, :4], {"m": 1}, items, load_image,
                                                Compose([Resize(8), ToTensor()]), 2, 1, ro / "train_views",
                                                torch.device("cpu"))
            assert views.shape == (2, 5, 4) and written is None
    fix = "going on without it. Set data.cache_dir=<a writable directory> (or the PL_CACHE_DIR variable) to keep it, " \
          "or data.eval_cache=false."
    assert [r.getMessage() for r in caplog.records] == [  # once per cache, not once per use
        f"The evaluation image cache {ro}/eval_images cannot be written ({words}); {fix}",
        f"The image feature cache {ro}/image_features cannot be written ({words}); {fix}",
        f"The training view cache {ro}/train_views cannot be written ({words}); {fix}"]


def test_a_full_cache_disk_is_one_warning_and_never_a_sigbus(disk, tmp_path, monkeypatch, caplog) -> None:
    refs = [f"img{i}" for i in range(5)]

    def load_image(ref: str) -> Image.Image:
        return Image.new("RGB", (20, 16), (40 * int(ref[3:]), 0, 0))

    expected = eval_cache.decoded_images(refs, load_image, Resize(8), tmp_path / "ok")
    if disk.mounted:
        disk.fill()
    else:  # the reservation of the memory-mapped file's blocks is what meets a full disk
        def full(fd: int, offset: int, length: int) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(os, "posix_fallocate", full)
    caplog.clear()  # the reference's own info line, when an earlier test left the root logger at INFO
    with caplog.at_level(logging.WARNING, "prompt_learning.data"):
        got = eval_cache.decoded_images(refs, load_image, Resize(8), disk.path / "eval_images")
    assert np.array_equal(got, expected) and no_temporary_files(disk.path)
    assert [r.getMessage() for r in caplog.records] == [
        f"The evaluation image cache {disk.path}/eval_images cannot be written (no space left on device); going on "
        "without it. Set data.cache_dir=<a writable directory> (or the PL_CACHE_DIR variable) to keep it, or "
        "data.eval_cache=false."]


def test_an_unwritable_home_only_costs_the_cache(read_only_dir, run_cfg, monkeypatch, caplog) -> None:
    ro, words = read_only_dir
    monkeypatch.delenv("PL_CACHE_DIR")
    monkeypatch.setenv("HOME", str(ro))  # data.cache_dir defaults to ~/.cache/prompt_learning/eval_images
    cfg = run_cfg("protocol=few_shot", "method=zeroshot", *SMALL)
    with caplog.at_level(logging.WARNING):
        status = run_point(cfg)
    assert status["status"] == "done", status.get("error")
    ours = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("prompt_")]
    assert ours == [f"The evaluation image cache {ro}/.cache/prompt_learning/eval_images cannot be written "
                    f"({words}); going on without it. Set data.cache_dir=<a writable directory> (or the PL_CACHE_DIR "
                    "variable) to keep it, or data.eval_cache=false."]


@pytest.mark.parametrize(("code", "path", "expected"), [
    (errno.ENOSPC, "/out/r/last.ckpt", "cannot write /out/r/last.ckpt: No space left on device. Free space on its "
     "disk or set paths.output_dir=<a directory with free space> (or the PL_OUTPUT_DIR variable)."),
    (errno.EDQUOT, "/out/r/results.json", "cannot write /out/r/results.json: Disk quota exceeded. Free space on "
     "its disk or set paths.output_dir=<a directory with free space> (or the PL_OUTPUT_DIR variable)."),
    (errno.EROFS, "/cache/eval_images/x.npy", "cannot write /cache/eval_images/x.npy: read-only file system. "
     "Set data.cache_dir=<a writable directory> (or the PL_CACHE_DIR variable)."),
    (errno.ENAMETOOLONG, "/out/" + "x" * 300, f"the path /out/{'x' * 300} is too long. Set "
     "paths.output_dir=<a shorter directory> (or the PL_OUTPUT_DIR variable)."),
    (errno.EACCES, "/no-such-dir/data.bin", "permission denied: /no-such-dir/data.bin. Check the permissions of /."),
    (errno.ENOENT, "/out/missing", None),  # not a storage fault: left to whoever reads it
])
def test_storage_error_lines_name_the_path_and_the_fix(code, path, expected) -> None:
    places = [Place(Path("/out"), "paths.output_dir", "PL_OUTPUT_DIR"), Place(Path("/cache"), "data.cache_dir",
                                                                                "PL_CACHE_DIR")]
    assert storage_error_message(OSError(code, os.strerror(code), path), places) == expected


def test_any_command_turns_a_storage_fault_into_one_line(capsys) -> None:
    with pytest.raises(SystemExit) as exit_, exit_on_user_error():
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/table.csv")
    assert exit_.value.code == 2
    assert capsys.readouterr().err == ("error: cannot write /data/table.csv: No space left on device. Free space "
                                       "on its disk.\n")
