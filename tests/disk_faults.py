"""Real filesystem faults for tests and bench/chaos: a small tmpfs filled for real, read-only
bind mounts, a filler file.

Mounting needs root (CI runs as root): tests call `require_root` (a skip with the reason);
outside pytest the mount helpers raise `PermissionError` saying so.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

ROOT_REASON = "needs root to mount a tmpfs / a read-only bind mount (CI runs as root)"


def require_root() -> None:
    import pytest

    if os.geteuid() != 0:
        pytest.skip(ROOT_REASON)


def _mount(*args: str) -> None:
    if os.geteuid() != 0:
        raise PermissionError(ROOT_REASON)
    subprocess.run(["mount", *args], check=True, capture_output=True)


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str = "4m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (created), unmounted afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size},mode=0777", "tmpfs", str(path))
    try:
        yield path
    finally:
        _umount(path)


@contextlib.contextmanager
def read_only_view(source: Path, target: Path) -> Iterator[Path]:
    """``source`` bind-mounted read-only at ``target``; `make_writable` remounts it rw."""
    target.mkdir(parents=True, exist_ok=True)
    _mount("--bind", str(source), str(target))
    try:
        _mount("-o", "remount,bind,ro", str(target))
        yield target
    finally:
        _umount(target)


def make_writable(target: Path) -> None:
    _mount("-o", "remount,bind,rw", str(target))


class DiskFiller:
    """Fills the filesystem holding ``directory`` with one file, and frees it again."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "filler"

    def fill(self) -> int:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        written = 0
        try:
            block = b"\0" * 65536
            while True:
                try:
                    written += os.write(fd, block)
                except OSError:
                    if len(block) == 512:
                        break
                    block = block[: len(block) // 2]
        finally:
            os.close(fd)
        assert os.statvfs(self.path.parent).f_bavail == 0, "the disk did not fill"
        return written

    def free(self) -> None:
        self.path.unlink(missing_ok=True)
