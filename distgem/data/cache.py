"""The on-disk cache of tokenised corpora: Arrow files keyed by content, built once, verified on every open.

An entry is a directory `<cache>/<name>-<key>/` with the Arrow files `Dataset.map` wrote and a
`manifest.json` (rows, and the size and xxh3 digest of every file). It is built in a temporary
sibling while holding an exclusive lock on the entry, and renamed into place when complete, so a
reader sees a whole entry or none, and concurrent jobs build it once. An entry whose files do not
match its manifest (truncated, overwritten, a half-finished copy) is moved aside and rebuilt, never read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import xxhash  # a dependency of `datasets`: ~10x faster than sha256, so verifying an entry costs little

from distgem.errors import UserError
from distgem.store import cache_root, lock

FORMAT = 1
MANIFEST = "manifest.json"


def default_directory() -> Path:
    """$DISTGEM_CACHE/datasets, else ~/.cache/distgem/datasets (beside the embedded world and backbones)."""
    return cache_root() / "datasets"


def file_digest(path: str | os.PathLike) -> str:
    """xxh3-128 of a file's bytes, read in chunks (never mapped: hashing must not grow the RSS)."""
    digest = xxhash.xxh3_128()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 23):
            digest.update(chunk)
    return digest.hexdigest()


def cache_key(parts: dict) -> str:
    """16 hex digits of sha256 over the canonical JSON of everything the entry depends on."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Entry:
    """One corpus a cache lookup returned (what `distgem data prepare` prints)."""

    name: str
    path: Path
    rows: int
    bytes: int
    built: bool
    seconds: float


class DatasetCache:
    """Get-or-build of `datasets.Dataset`s under one directory; every lookup is recorded in `entries`."""

    def __init__(self, directory: str | os.PathLike | None = None, num_proc: int = 1, progress: bool = False):
        self.directory = Path(directory) if directory else default_directory()
        self.num_proc, self.progress = num_proc, progress
        self.entries: list[Entry] = []

    def get(self, name: str, key_parts: dict, build: Callable[[Path, int], object]):
        """The cached dataset for `key_parts`; on a miss `build(directory, num_proc)` returns a Dataset whose
        Arrow files it wrote under `directory` (map's cache_file_name)."""
        started = time.perf_counter()
        final = self.directory / f"{name}-{cache_key(key_parts)}"
        dataset, problem = _open(final)
        built = False
        if dataset is None:
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise UserError(f"data.cache_dir: cannot create {self.directory} ({err.strerror})") from None
            with lock(self.directory / f".{final.name}.lock", f"the cache entry {final.name}"):
                dataset, problem = _open(final)  # another job may have built it while we waited
                if dataset is None:
                    if problem:
                        print(f"distgem: cache entry {final} is corrupt ({problem}); rebuilding", file=sys.stderr)
                    self._build(final, key_parts, build)
                    built = True
                    dataset, problem = _open(final)
                    if dataset is None:
                        raise RuntimeError(f"{final}: a freshly built cache entry fails verification ({problem})")
        size = sum(f.stat().st_size for f in final.iterdir())
        self.entries.append(Entry(name, final, dataset.num_rows, size, built, time.perf_counter() - started))
        return dataset

    def _build(self, final: Path, key_parts: dict, build) -> None:
        for stale in self.directory.glob(f".{final.name}.tmp-*"):  # left by a builder that died (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        if final.exists():  # corrupt: move aside first (a reader may still have it memory-mapped)
            aside = final.with_name(f".{final.name}.corrupt-{os.getpid()}")
            final.rename(aside)
            shutil.rmtree(aside, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=self.directory))
        try:
            os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's 0700 would hide the entry from a group sharing the cache
            with _progress_bars(self.progress):
                dataset = _unwrap_user_errors(build, tmp, self.num_proc)
            files = [Path(f["filename"]).resolve() for f in dataset.cache_files]
            if not files or any(tmp.resolve() not in f.parents for f in files):
                raise RuntimeError(f"cache builder for {final.name} wrote its Arrow files outside {tmp}")
            rows = dataset.num_rows
            del dataset
            kept = {f.name for f in files}
            for other in tmp.iterdir():  # the generator's intermediate Arrow file and its builder folders
                if other.name not in kept:
                    shutil.rmtree(other) if other.is_dir() else other.unlink()
            manifest = {
                "format": FORMAT,
                "rows": rows,
                "key": key_parts,
                "files": [{"name": f.name, "size": f.stat().st_size, "xxh3": file_digest(f)} for f in files],
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _open(final: Path):
    """(memory-mapped dataset, None) for a verified entry; (None, reason) otherwise (reason '' when absent)."""
    if not final.is_dir():
        return None, ""
    try:
        manifest = json.loads((final / MANIFEST).read_text())
        if manifest.get("format") != FORMAT:
            return None, f"format {manifest.get('format')!r}, expected {FORMAT}"
        for record in manifest["files"]:
            path = final / record["name"]
            if not path.is_file():
                return None, f"{record['name']} is missing"
            if path.stat().st_size != record["size"]:
                return None, f"{record['name']} has {path.stat().st_size} bytes, the manifest says {record['size']}"
            if file_digest(path) != record["xxh3"]:
                return None, f"{record['name']} does not match its digest"
        from datasets import Dataset, concatenate_datasets

        parts = [Dataset.from_file(str(final / record["name"]), in_memory=False) for record in manifest["files"]]
        dataset = parts[0] if len(parts) == 1 else concatenate_datasets(parts)
        if dataset.num_rows != manifest["rows"]:
            return None, f"{dataset.num_rows} rows, the manifest says {manifest['rows']}"
        return dataset, None
    except FileNotFoundError:
        return None, f"no {MANIFEST} (a half-written entry)"
    except (OSError, ValueError, KeyError, TypeError) as err:  # JSON, pyarrow (ArrowInvalid is a ValueError)
        return None, f"unreadable: {str(err).splitlines()[0] if str(err) else type(err).__name__}"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _unwrap_user_errors(build, *args):
    """`datasets` wraps what a generator raises in DatasetGenerationError: surface our one-line errors."""
    try:
        return build(*args)
    except Exception as err:
        cause = err
        while cause is not None and not isinstance(cause, UserError):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        raise cause from None


@contextlib.contextmanager
def _progress_bars(enabled: bool):
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    (datasets.enable_progress_bars if enabled else datasets.disable_progress_bars)()
    try:
        yield
    finally:
        (datasets.enable_progress_bars if was_enabled else datasets.disable_progress_bars)()
