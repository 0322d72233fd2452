"""Arrays written once to disk and read a batch at a time, so that memory does not grow with the dataset.

A ``DiskArray`` is one raw file of rows (``<name>.u8``: n rows of a fixed shape and dtype, C order) and a JSON
header (``<name>.json``: shape, dtype and a content digest). Indexing (an int, a slice, an index array) reads only
those rows with ``os.pread``: no memory map, so the pages read are the kernel's page cache and never count in the
process's resident memory; an epoch over 20 000 images at 224 px holds one batch, not 3 GB.

The digest (BLAKE2b of the bytes, computed while writing) names the content without reading it again: the run
cache and the PO trainer's run identity use it in place of hashing the whole array.

``DiskArrayWriter`` streams rows into a temporary file and renames it into place when closed: a header exists only
for a complete array, an interrupted write leaves nothing that reads as data.

Whole-array conversion (``np.asarray(disk_array)``) is refused on purpose, so that a code path that would load
everything fails loudly; ``DiskArray.load()`` reads all rows when that is what is wanted (small sets, tests).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

SUFFIX = ".u8"


def _header_path(path: Path) -> Path:
    return path.with_suffix(".json")


class DiskArray:
    """Read-only rows of a finished ``DiskArrayWriter`` file; see the module docstring."""

    def __init__(self, path: str | Path):
        self.path = Path(path).with_suffix(SUFFIX)
        head = _header_path(self.path)
        if not head.is_file() or not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no finished disk array here (the header {head.name} is written "
                                    f"last, when the array is complete); write it again with DiskArrayWriter")
        try:
            meta = json.loads(head.read_text())
            self.shape = tuple(int(v) for v in meta["shape"])
            self.dtype = np.dtype(meta["dtype"])
            self.digest = str(meta["digest"])
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{head}: not a readable disk-array header ({type(e).__name__}: {e}): it is truncated "
                             f"or damaged; delete {head.name} and {self.path.name} and write the array again") from None
        self.row_shape = self.shape[1:]
        self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize
        size = self.path.stat().st_size
        if size != self.row_bytes * self.shape[0]:
            raise ValueError(f"{self.path} holds {size} bytes, its header says {self.shape} {self.dtype} "
                             f"({self.row_bytes * self.shape[0]} bytes): the file is damaged; delete both files and "
                             f"write the array again")
        self._fd: int | None = None
        self._pid: int | None = None

    # -- array-like surface ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return self.row_bytes * self.shape[0]

    def __repr__(self) -> str:
        return f"DiskArray({str(self.path)!r}, shape={self.shape}, dtype={self.dtype})"

    def __array__(self, dtype=None, copy=None):
        raise TypeError(f"{self!r} is not loaded whole by np.asarray: index it (rows, a slice, an index array) or "
                        f"call .load() to read all {self.nbytes / 2**20:.0f} MiB on purpose")

    def fingerprint_token(self) -> str:
        """What the run cache hashes for this array (its shape, dtype and content digest)."""
        return f"DiskArray{self.dtype}{self.shape}{self.digest}"

    def verify(self, chunk_bytes: int = 1 << 24) -> None:
        """Read the whole file once and check it against the header's digest: bytes changed in place (same size)
        raise a ValueError naming the file."""
        h = hashlib.blake2b(digest_size=16)
        with open(self.path, "rb") as f:
            while block := f.read(chunk_bytes):
                h.update(block)
        if h.hexdigest() != self.digest:
            raise ValueError(f"{self.path}: its content does not match the digest in {_header_path(self.path).name} "
                             f"(the bytes changed after it was written); write the array again")

    # -- reading ---------------------------------------------------------------------------------------------
    def _file(self) -> int:
        if self._fd is None or self._pid != os.getpid():  # a DataLoader worker (forked) opens its own descriptor
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        return self._fd

    def _read_run(self, start: int, count: int, out: np.ndarray) -> None:
        want = count * self.row_bytes
        buf = memoryview(out.reshape(-1).view(np.uint8))
        got = 0
        while got < want:
            n = os.preadv(self._file(), [buf[got:want]], start * self.row_bytes + got)
            if n <= 0:
                raise OSError(f"{self.path}: short read at row {start} (the file changed while it was read)")
            got += n

    def _rows(self, idx: np.ndarray) -> np.ndarray:
        idx = idx.astype(np.int64, copy=False)
        n = self.shape[0]
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"row index out of range for {n} rows")
        idx = np.where(idx < 0, idx + n, idx)
        out = np.empty((len(idx),) + self.row_shape, self.dtype)
        if not len(idx):
            return out
        order = np.argsort(idx, kind="stable")
        srt = idx[order]
        # contiguous runs of sorted indices are read with one call each
        breaks = np.flatnonzero(np.diff(srt) != 1) + 1
        tmp = np.empty_like(out)
        pos = 0
        for run in np.split(srt, breaks):
            self._read_run(int(run[0]), len(run), tmp[pos:pos + len(run)])
            pos += len(run)
        out[order] = tmp
        return out

    def __getitem__(self, key):
        if isinstance(key, tuple):
            rows = self[key[0]]
            return rows[(slice(None),) + key[1:]] if not np.isscalar(key[0]) else rows[key[1:]]
        if isinstance(key, (int, np.integer)):
            return self._rows(np.array([int(key)]))[0]
        if isinstance(key, slice):
            start, stop, step = key.indices(self.shape[0])
            if step == 1:
                out = np.empty((max(0, stop - start),) + self.row_shape, self.dtype)
                if len(out):
                    self._read_run(start, len(out), out)
                return out
            return self._rows(np.arange(start, stop, step))
        arr = np.asarray(key)
        if arr.dtype == bool:
            if arr.shape != (self.shape[0],):
                raise IndexError(f"boolean index of shape {arr.shape} for {self.shape[0]} rows")
            return self._rows(np.flatnonzero(arr))
        if arr.dtype.kind not in "iu":
            raise IndexError(f"index rows with ints, slices or integer/boolean arrays, got {arr.dtype}")
        return self._rows(arr.reshape(-1)).reshape(arr.shape + self.row_shape)

    def load(self) -> np.ndarray:
        """All rows in memory."""
        return self[:]

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __getstate__(self):  # picklable for DataLoader workers: the descriptor is reopened where it is used
        return {k: v for k, v in self.__dict__.items() if k not in ("_fd", "_pid")}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._fd = self._pid = None


class DiskArrayWriter:
    """Append rows of one shape and dtype; ``close()`` (or leaving the ``with`` block without an error) makes the
    array visible at ``path`` and returns the ``DiskArray``. An error inside the block leaves no array."""

    def __init__(self, path: str | Path, row_shape: tuple[int, ...] | None = None, dtype=np.uint8):
        self.path = Path(path).with_suffix(SUFFIX)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.row_shape = tuple(row_shape) if row_shape is not None else None
        self.dtype = np.dtype(dtype)
        self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self._f = open(self._tmp, "wb")
        self._h = hashlib.blake2b(digest_size=16)
        self.n = 0

    def append(self, rows: np.ndarray) -> None:
        """Add rows (n, *row_shape), or one row (*row_shape) once the row shape is known."""
        rows = np.asarray(rows)
        if self.row_shape is None:  # the first call fixes the row shape: it is read as a batch of rows
            self.row_shape = rows.shape[1:]
        if rows.shape == self.row_shape:
            rows = rows[None]
        if rows.shape[1:] != self.row_shape:
            raise ValueError(f"{self.path.name}: rows of shape {rows.shape[1:]} do not match the array's "
                             f"{self.row_shape}: every row must have one size (build with image_size=<side>)")
        if rows.dtype != self.dtype:
            raise ValueError(f"{self.path.name}: rows of dtype {rows.dtype}, the array holds {self.dtype}")
        b = np.ascontiguousarray(rows).tobytes()
        self._f.write(b)
        self._h.update(b)
        self.n += len(rows)

    def close(self) -> DiskArray:
        if self.row_shape is None:
            raise ValueError(f"{self.path.name}: no rows were written (give row_shape for an empty array)")
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        shape = (self.n,) + tuple(self.row_shape)
        head = _header_path(self.path)
        tmp_head = head.with_name(f".{head.name}.{os.getpid()}.tmp")
        tmp_head.write_text(json.dumps({"shape": list(shape), "dtype": self.dtype.str,
                                        "digest": self._h.hexdigest()}))
        if head.exists():  # replacing an array: drop its header first, so that no moment pairs old header + new data
            head.unlink()
        os.replace(self._tmp, self.path)
        os.replace(tmp_head, head)
        return DiskArray(self.path)

    def abort(self) -> None:
        self._f.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.abort()
        elif not self._f.closed:
            self.close()
        return False


def write_disk_array(path: str | Path, array: np.ndarray, chunk: int = 256) -> DiskArray:
    """An in-memory array written as a DiskArray."""
    array = np.asarray(array)
    w = DiskArrayWriter(path, array.shape[1:], array.dtype)
    try:
        for i in range(0, len(array), chunk):
            w.append(array[i:i + chunk])
    except BaseException:
        w.abort()
        raise
    return w.close()
