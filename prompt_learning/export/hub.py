"""Exports on the Hugging Face Hub: ``hf-hub:<owner>/<name>[@revision]`` references, download and upload.

``huggingface_hub`` is imported only when a hub reference is used. Downloads go through
``snapshot_download`` and therefore its local cache: with ``HF_HUB_OFFLINE=1`` a repository fetched
before loads from the cache without any network access.
"""

from __future__ import annotations

from pathlib import Path

from prompt_learning.errors import ConfigurationError

HUB_PREFIX = "hf-hub:"
EXPORT_PATTERNS = ("prompts.safetensors", "prompt_config.json", "README.md")  # what a download fetches


def hub_reference(path: str | Path) -> tuple[str, str | None] | None:
    """``(repo_id, revision)`` of an ``hf-hub:<owner>/<name>[@revision]`` string; None for a local path."""
    if not isinstance(path, str) or not path.startswith(HUB_PREFIX):
        return None
    repo_id, _, revision = path[len(HUB_PREFIX):].strip().partition("@")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ConfigurationError(f"{path!r} is not a hub reference; write hf-hub:<owner>/<name> (optionally "
                                 f"followed by @<branch, tag or commit>).")
    return repo_id, revision or None


def download_export(repo_id: str, revision: str | None = None, cache_dir: str | Path | None = None,
                    token: str | bool | None = None) -> Path:
    """The local snapshot folder of an export repository (downloaded, or from the cache when offline)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        folder = snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, token=token,
                                   allow_patterns=list(EXPORT_PATTERNS), library_name="prompt-learning")
    except LocalEntryNotFoundError as exc:
        raise ConfigurationError(f"hf-hub:{repo_id} (revision {revision or 'main'}) is not in the local Hugging Face "
                                 f"cache and cannot be downloaded now: {exc}") from None
    except HfHubHTTPError as exc:  # repository not found, gated, private without a token, hub errors
        raise ConfigurationError(f"Cannot download hf-hub:{repo_id}: {exc}") from None
    return Path(folder)


def upload_folder(folder: Path, repo_id: str, *, private: bool | None = None, token: str | None = None,
                  commit_message: str | None = None, revision: str | None = None) -> str:
    """Create the model repository ``repo_id`` if needed and upload the files of ``folder`` as one commit;
    returns the commit's URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model", revision=revision,
                             commit_message=commit_message or "Upload learned prompts (prompt_learning)")
    return str(getattr(info, "commit_url", info))
