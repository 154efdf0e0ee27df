"""The distgem cache on disk: artefacts built once (worlds, backbones, CPU kernels, tokenised corpora).

An artefact is built into a temporary sibling and renamed into place while its builder holds an
exclusive lock, so a reader sees a whole artefact or none and concurrent jobs build it once. The lock
is an advisory `flock`, which the kernel releases when its holder dies: a build killed half-way
leaves no stale lock behind (unlike a lock *file* whose existence is the lock). A process that waits
for another's build says so after a few seconds, naming the lock and its holder.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

WAIT_QUIET_SECONDS = 5.0
"""A wait shorter than this is silent; a longer one prints what it waits for, then again every minute."""


def cache_root() -> Path:
    """$DISTGEM_CACHE, else ~/.cache/distgem."""
    return Path(os.environ.get("DISTGEM_CACHE") or Path.home() / ".cache" / "distgem")


def source_digest(*modules: str) -> str:
    """Hash of the source files of these modules: a cached artefact is rebuilt whenever its code changes."""
    import importlib.util

    digest = hashlib.sha256()
    for name in modules:
        digest.update(Path(importlib.util.find_spec(name).origin).read_bytes())
    return digest.hexdigest()


def build_once(final: Path, build: Callable[[Path], None], what: str | None = None) -> Path:
    """`final` if it exists; else build into a temporary sibling and rename it (one builder at a time)."""
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with lock(final.parent / f".{final.name}.lock", what or f"the build of {final}"):
        if final.is_dir():  # another process built it while we waited
            return final
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
        try:
            build(tmp)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final


@contextlib.contextmanager
def lock(path: Path, what: str) -> Iterator[None]:
    """Hold an exclusive advisory lock on `path` (created if missing); the holder's pid is written into it.

    Without fcntl (Windows) there is no lock: the atomic renames alone keep the cache consistent."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path, "a+") as handle:
        started = time.monotonic()
        announced = None
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - started
                if waited >= WAIT_QUIET_SECONDS and (announced is None or waited - announced >= 60):
                    handle.seek(0)
                    holder = handle.read().strip() or "unknown"
                    print(
                        f"distgem: waiting {waited:.0f} s for {what} (lock {path}, held by pid {holder})",
                        file=sys.stderr,
                        flush=True,
                    )
                    announced = waited
                time.sleep(0.2)
        try:
            handle.truncate(0)
            handle.write(str(os.getpid()))
            handle.flush()
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
