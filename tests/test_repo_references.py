"""The repository stands on its own: every file it mentions is in it.

Scanned: every git-tracked text file (``.py .md .yaml .yml .toml .txt .cfg``) plus untracked files that
git does not ignore. Checked, with failures reported as ``file:line: mention``:

a. every mention of a Markdown file name (``name.md``, ``docs/x.md``) resolves: relative to the mentioning
   file's folder, or to the repository root, or, for a bare file name, to some file of that name;
b. every Markdown link target ``](path)`` in a ``.md`` file that is not a URL or an anchor resolves
   relative to the linking file;
c. every path that starts with a top-level folder of the repository (``prompt_learning/``, ``configs/``,
   ``scripts/``, ``tests/``, ``docs/``, ``benchmarks/``, ``examples/``, ``.ci/``) resolves, or is a path
   git ignores on purpose (``configs/local/``); placeholders (``<name>``, ``{a,b}``, ``*``, ``...``) are
   skipped;
d. nothing points at notes kept outside the repository (the sibling folder of requirement notes).

A file of another repository is cited as a URL, or with that repository's name in front of its path
(``KgCoOp/configs/trainers/...``): such a path does not start with one of our folders, so (c) leaves it
alone. Files that the code writes (not part of the tree) are listed in ``GENERATED``.
"""

from __future__ import annotations

import posixpath
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SELF = Path(__file__).resolve().relative_to(ROOT).as_posix()
TEXT_SUFFIXES = (".py", ".md", ".yaml", ".yml", ".toml", ".txt", ".cfg")
TOP_LEVEL = ("prompt_learning", "configs", "scripts", "tests", "docs", "benchmarks", "examples", ".ci")
GENERATED = frozenset({"aggregate.md"})  # written by scripts/aggregate.py into <results_dir>/aggregate/

URL = re.compile(r"(?:\b[a-z][a-z0-9+.-]*://|\bwww\.|\bgithub\.com/)[^\s)>\]`'\"]*", re.IGNORECASE)
MD_MENTION = re.compile(r"(?<![\w./*<>{}-])[\w./-]*[\w-]\.md\b")
MD_LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
TOP = "|".join(re.escape(t) for t in TOP_LEVEL)
PATH_MENTION = re.compile(r"(?<![\w./:@~$%-])((?:" + TOP + r")/[^\s`'\"()\[\],;|]*)")
STRING_ESCAPE = re.compile(r"\\[nrt]")  # a path followed by "\n" inside a Python string literal
PLACEHOLDER = re.compile(r"[<>{}*]|\.\.\.|…")
# Assembled so that this file does not match itself.
OUTSIDE = re.compile(re.escape("..") + "/" + "shared" + r"\b|\bshared" + "/" + "spec")


@dataclass(frozen=True)
class Repo:
    """What a mention may resolve to: files by path relative to the root (POSIX), and their folders."""

    files: frozenset[str]
    ignored: Callable[[str], bool] = field(default=lambda path: False)

    @property
    def dirs(self) -> frozenset[str]:
        return _parents(self.files)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(posixpath.basename(f) for f in self.files)

    def has(self, path: str) -> bool:
        path = posixpath.normpath(path)
        return path in self.files or path in self.dirs


@lru_cache(maxsize=8)
def _parents(files: frozenset[str]) -> frozenset[str]:
    dirs = set()
    for f in files:
        parent = posixpath.dirname(f)
        while parent:
            dirs.add(parent)
            parent = posixpath.dirname(parent)
    return frozenset(dirs)


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _blank_urls(text: str) -> str:
    """The text with every URL replaced by spaces (offsets, and so line numbers, kept)."""
    return URL.sub(lambda m: " " * len(m.group()), text)


def _clean(mention: str) -> str:
    """Drop an anchor / line suffix and trailing sentence punctuation."""
    mention = mention.split("#", 1)[0]
    mention = re.sub(r":\d+(?::\d+)?$", "", mention)
    return mention.rstrip(".:;!?")


def scan(text: str, where: str, repo: Repo) -> list[str]:
    """Dangling references in ``text``, the contents of the repository file ``where`` (POSIX, relative)."""
    here = posixpath.dirname(where)
    failures: list[tuple[int, str, str]] = []
    for m in OUTSIDE.finditer(text):
        failures.append((m.start(), m.group(), "points outside the repository"))
    body = _blank_urls(text)
    for m in MD_MENTION.finditer(body):
        mention = m.group().removeprefix("./")
        if mention in GENERATED:
            continue
        if not (repo.has(posixpath.join(here, mention)) or repo.has(mention) or repo.ignored(mention)
                or ("/" not in mention and mention in repo.names)):
            failures.append((m.start(), m.group(), "no such Markdown file"))
    if where.endswith(".md"):
        for m in MD_LINK.finditer(text):
            target = m.group(1)
            if URL.match(target) or target.startswith(("#", "mailto:")):
                continue
            path = _clean(target.split("?", 1)[0])
            if path and not repo.has(posixpath.join(here, path)):
                failures.append((m.start(1), target, "broken link"))
    for m in PATH_MENTION.finditer(body):
        mention = m.group(1)
        escape = STRING_ESCAPE.search(mention)
        mention = mention[: escape.start()] if escape else mention
        if PLACEHOLDER.search(mention) or "\\" in mention:  # a pattern (regex, glob), not a path
            continue
        path = _clean(mention)
        if not repo.has(path) and not repo.ignored(path):
            failures.append((m.start(1), mention, "no such path"))
    first: dict[int, tuple[str, str]] = {}  # one report per mention: a broken link, else the first rule it failed
    for offset, mention, why in failures:
        if offset not in first or why == "broken link":
            first[offset] = (mention, why)
    return [f"{where}:{_line(text, offset)}: {mention} ({why})" for offset, (mention, why) in sorted(first.items())]


# -- the repository --------------------------------------------------------------------------------
def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout


def repository_files() -> list[str]:
    listed = _git("ls-files", "-z").split("\0") + _git("ls-files", "-z", "--others", "--exclude-standard").split("\0")
    return sorted({f for f in listed if f and (ROOT / f).is_file()})


@cache
def git_ignored(path: str) -> bool:
    """Whether git ignores ``path`` (a user-local file such as ``configs/local/default.yaml``)."""
    return subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=ROOT, check=False).returncode == 0


def text_files(files: Iterable[str]) -> list[str]:
    return [f for f in files if f.endswith(TEXT_SUFFIXES)]


def repository_failures() -> list[str]:
    files = repository_files()
    repo = Repo(frozenset(files), git_ignored)
    failures = []
    for rel in text_files(files):
        if rel == SELF:  # the unit checks below plant dangling references on purpose
            continue
        try:
            text = (ROOT / rel).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        failures += scan(text, rel, repo)
    return failures


@pytest.mark.skipif(not (ROOT / ".git").exists() or shutil.which("git") is None, reason="needs a git checkout")
def test_every_reference_resolves() -> None:
    failures = repository_failures()
    assert not failures, f"{len(failures)} reference(s) to files not in the repository:\n" + "\n".join(failures)


# -- the scanner itself ----------------------------------------------------------------------------
REPO = Repo(frozenset({"README.md", "docs/architecture.md", "docs/methods/coop.md", "scripts/train.py",
                       "prompt_learning/methods/coop.py"}), ignored=lambda p: p.startswith("configs/local/"))


def test_scanner_flags_a_dangling_markdown_name() -> None:
    planted = "ok: see docs/architecture.md.\nbad: the depth rule (" + "methods" + ".md §2.4)\n"
    assert scan(planted, "prompt_learning/x.py", REPO) == [
        "prompt_learning/x.py:2: " + "methods" + ".md (no such Markdown file)"]


def test_scanner_resolves_relative_bare_and_url_mentions() -> None:
    text = ("[coop](coop.md) and [arch](../architecture.md#depth), README.md, `docs/methods/` \n"
            "https://github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md and [paper](https://arxiv.org/abs/1)\n")
    assert scan(text, "docs/methods/README.md", REPO) == []


def test_scanner_flags_broken_links_and_paths() -> None:
    text = "[gone](missing.md)\nrun scripts/nope.py, not scripts/train.py; configs/local/default.yaml is ignored\n"
    assert scan(text, "docs/x.md", REPO) == [
        "docs/x.md:1: missing.md (broken link)",
        "docs/x.md:2: scripts/nope.py (no such path)",
    ]


def test_scanner_skips_placeholders_patterns_and_other_repositories() -> None:
    text = ("configs/experiment/<method>/base2new.yaml, tests/methods/test_{name}.py, benchmarks/*.md, "
            "scripts/...\nKgCoOp/configs/trainers/KgCoOp/vit_b16_ep100_ctxv1.yaml (htyao89/KgCoOp)\n"
            'line = re.search(r"^uv run scripts/train\\.py (plugins=.*)$", text)\n')
    assert scan(text, "configs/method/x.yaml", REPO) == []


def test_scanner_flags_notes_outside_the_repository() -> None:
    text = "facts from " + ".." + "/shared/x and from " + "shared" + "/spec/y\n"
    found = scan(text, "README.md", REPO)
    assert len(found) == 2 and all("points outside the repository" in f for f in found)
