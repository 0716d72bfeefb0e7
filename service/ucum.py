"""The UCUM unit registry: pint with ucumvert's UCUM definitions and grammar, built once per
process, its parsed definitions cached per user.

Building it was most of the CLI's fixed start (~1.1 CPU s of ~1.5). Two causes, two fixes:

- ucumvert's `PintUcumRegistry()` builds two pint registries: itself, and pint's application
  registry, into which its UCUM transformer (made without a registry) loads the definitions
  again; every unit it returns belongs to that second one. `UcumRegistry` builds one: a
  `pint.UnitRegistry()` with the same definitions file loaded after pint's defaults, and the
  transformer given that registry, which is what the application registry was (the same
  definitions in the same order: the same factors, checked in tests/test_ucum.py).
- Most of a registry's build is parsing definition files. pint can cache the parsed files
  (`cache_folder`, pickles named by pint's version and each file's content); the cache lives in
  `<user cache>/cohort-match/ucum-<key>/` (`platformdirs`: `$XDG_CACHE_HOME` or `~/.cache` on
  Linux), where the key hashes Python's, pint's and ucumvert's versions and the UCUM
  definitions file, so a changed install reads a new folder and never an old pickle.

The cache is read only when it is safe and whole, else the registry is built without it
(same registry, slower start); it never decides anything:
- the folder and its parent must be ours (or root's), not symlinks, and writable by no one
  else: the pickles in it are code to whoever can write them;
- a folder is filled in a private temporary folder beside it and renamed into place complete,
  with a `complete` marker last, so a reader never meets a half-written pickle;
- a build from the cache that fails in any way (a corrupt or foreign file) removes the folder
  and builds again, filling it anew.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import pint
import platformdirs
import ucumvert
from ucumvert import UcumToPintTransformer, get_ucum_parser, parse_ucum

__all__ = ["UcumRegistry", "build_registry", "cache_dir", "user_cache_root"]

log = logging.getLogger(__name__)

DEFINITIONS = Path(ucumvert.__file__).resolve().parent / "pint_ucum_defs.txt"
COMPLETE = "complete"  # written last into a filled cache folder


class UcumRegistry:
    """One pint registry with ucumvert's UCUM definitions, and UCUM codes read into its units.

    `cache_folder`: pint's cache of parsed definition files (None: parse them)."""

    def __init__(self, cache_folder: Path | None = None) -> None:
        self.pint: Any = pint.UnitRegistry(cache_folder=cache_folder)
        self.pint.load_definitions(DEFINITIONS)
        self._parser = get_ucum_parser()
        self._transform: Callable[[Any], Any] = UcumToPintTransformer(ureg=self.pint).transform

    def from_ucum(self, code: str) -> Any:
        """The pint quantity of a UCUM code; raises ucumvert's (lark's) errors for others."""
        return self._transform(parse_ucum(code, self._parser))


def user_cache_root() -> Path:
    """`cohort-match` in the user's cache directory (`$XDG_CACHE_HOME`, else ~/.cache)."""
    return platformdirs.user_cache_path("cohort-match", appauthor=False)


def cache_key() -> str:
    """What decides the cached pickles' content and format."""
    parts = (
        sys.implementation.cache_tag or sys.version,
        pint.__version__,
        metadata.version("ucumvert"),
        hashlib.sha256(DEFINITIONS.read_bytes()).hexdigest(),
    )
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def cache_dir(root: Path) -> Path:
    return root / f"ucum-{cache_key()}"


def _private(path: Path) -> bool:
    """A real directory, ours (or root's), that no one else may write into."""
    info = path.lstat()
    return (
        stat.S_ISDIR(info.st_mode)
        and info.st_uid in (os.getuid(), 0)
        and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    )


def _fill(folder: Path) -> UcumRegistry:
    """Build with an empty cache in a private folder beside `folder`, then move it into
    place whole (the marker last); if another process got there first, theirs stays."""
    staging = Path(tempfile.mkdtemp(prefix=".ucum-", dir=folder.parent))  # 0700
    try:
        registry = UcumRegistry(staging)
        (staging / COMPLETE).write_text(cache_key() + "\n")
        with contextlib.suppress(OSError):  # taken meanwhile: theirs is as good
            staging.rename(folder)
        return registry
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def build_registry(root: Path | None) -> UcumRegistry:
    """The registry, with its parsed definitions cached under `root` when that is safe
    (module docstring); None: no cache."""
    if root is None:
        return UcumRegistry()
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not (_private(root) and _private(root.parent)):
            log.warning("UCUM cache not used: %s is writable by others (or not ours)", root)
            return UcumRegistry()
        folder = cache_dir(root)
        if folder.is_dir() and not folder.is_symlink() and _private(folder):
            if (folder / COMPLETE).is_file():
                try:
                    return UcumRegistry(folder)
                except Exception as exc:  # a corrupt or foreign pickle: drop the folder
                    log.warning("UCUM cache %s unreadable (%s): built again", folder, exc)
            shutil.rmtree(folder, ignore_errors=True)  # unreadable, or never completed
        elif folder.exists() or folder.is_symlink():
            log.warning("UCUM cache not used: %s is not a private folder", folder)
            return UcumRegistry()
        return _fill(folder)
    except OSError as exc:  # a read-only or full disk, no home: start without the cache
        log.info("UCUM cache not used (%s)", exc)
        return UcumRegistry()
