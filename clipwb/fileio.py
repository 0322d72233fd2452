"""Files: atomic writes (write to a temp file in the target folder, then rename, so that nothing already
written is lost or left half-written when a run is interrupted), writable-folder and memory checks, the cache dir."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def cache_dir(path: str | Path | None = None) -> Path:
    """clipwb's cache (tiny weights, datasets, runs): ``path``, else ``$CLIPWB_CACHE``, else ``~/.cache/clipwb``."""
    return Path(path or os.environ.get("CLIPWB_CACHE") or Path.home() / ".cache" / "clipwb")


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` then rename tmp_path onto ``path``; the temp file is removed on failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def check_writable_dir(path: str | Path, what: str = "output folder") -> Path:
    """Create ``path`` as a folder (or accept an existing one) and check that files can be written in it, before
    any long work: a path that is a file, or a folder without write permission, fails now with a clear error."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{what} {path} is an existing file, not a folder: pass a folder path (it is created if "
                         f"missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".clipwb-write-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"cannot write into {what} {path} ({e.strerror}): pass a folder you can write to") from None
    return path


def clean_stale_temp_files(folder: str | Path) -> list[Path]:
    """Remove the temp files that ``atomic_write`` leaves behind when its process was killed mid-write
    (``.<name>.<random>.tmp``) directly inside ``folder``."""
    removed = []
    for p in Path(folder).glob(".*.tmp"):
        if p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def available_memory() -> int | None:
    """Bytes of memory available now (Linux/macOS), or None where unknown."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(nbytes: int, what: str, fix: str) -> None:
    """A clear error, before allocating, when ``nbytes`` would not fit in 80 % of the memory available."""
    avail = available_memory()
    if avail and nbytes > 0.8 * avail:
        raise ValueError(f"{what} needs about {nbytes / 2 ** 30:.1f} GiB of memory, more than the "
                         f"{avail / 2 ** 30:.1f} GiB available: {fix}")
