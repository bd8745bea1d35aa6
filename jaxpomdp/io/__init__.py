"""Model files in and out: Cassandra ``.pomdp`` (read, write) and APPL ``.pomdpx`` (read).

``load_pomdp(path)`` picks the format from the content (XML is ``.pomdpx``) and
the name; gzip-compressed files (``.gz``, or any file starting with the gzip
magic bytes) are decompressed transparently. Every problem with the input is
reported as a :class:`~jaxpomdp.PomdpFormatError` naming file, line and column.
"""

from __future__ import annotations

import gzip
import os
import secrets
import zlib
from pathlib import Path
from typing import Callable, Optional

from jaxpomdp.errors import PomdpFormatError
from jaxpomdp.model import DEFAULT_TOLERANCE, TabularPOMDP

__all__ = ["load_pomdp", "save_pomdp", "loads_pomdp", "dumps_pomdp", "atomic_write"]

#: Refuse to decompress more than this many bytes from a ``.gz`` file.
MAX_DECOMPRESSED_BYTES = 8 * 2 ** 30

ProgressFn = Callable[[float], None]


def _gunzip(data: bytes, path: str) -> bytes:
    """Every member of a gzip file, decompressed and joined (``zcat``'s output).

    A file may hold several gzip members one after another (``cat a.gz b.gz``); all
    are read. Zero bytes after the last member (tape-block padding) are ignored, as
    gzip does; anything else after it is refused with its byte offset, as are
    corrupt and truncated streams.
    """
    out, total, start = [], 0, 0
    while True:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        buf = data[start:]
        try:
            while buf:
                chunk = d.decompress(buf, 1 << 24)
                total += len(chunk)
                if total > MAX_DECOMPRESSED_BYTES:
                    raise PomdpFormatError(
                        f"gzip data decompresses to more than {MAX_DECOMPRESSED_BYTES} bytes", path)
                out.append(chunk)
                buf = d.unconsumed_tail
            out.append(d.flush())
        except zlib.error as e:
            raise PomdpFormatError(f"corrupt gzip data at byte offset {start} or after ({e})", path) from None
        if not d.eof:
            raise PomdpFormatError("truncated gzip data (the compressed stream ends early)", path)
        rest = d.unused_data
        start = len(data) - len(rest)
        if not rest.strip(b"\0"):
            return b"".join(out)
        if rest[:2] != b"\x1f\x8b":
            raise PomdpFormatError(
                f"unexpected bytes after the gzip data at byte offset {start} (expected another gzip member "
                "or the end of the file)", path)


def _is_xml(data: bytes) -> bool:
    if data[:2] in (b"\xff\xfe", b"\xfe\xff") or data[:2] in (b"<\x00", b"\x00<"):
        return True  # UTF-16, with or without a byte-order mark
    head = data[:512].lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(b"<")


def loads_pomdp(data: bytes | str, path: str = "<string>", *, format: Optional[str] = None,
                tolerance: float = DEFAULT_TOLERANCE,
                progress: Optional[ProgressFn] = None) -> TabularPOMDP:
    """Reads a model from the bytes (or text) of a file.

    Args:
      data: the file's content, possibly gzip-compressed.
      path: the name used in error messages (and, without ``format``, to pick it).
      format: ``"pomdp"`` or ``"pomdpx"``; by default the suffix of ``path``
        (``.pomdp``, ``.pomdpx``, either with ``.gz``) decides, and without one
        XML content is read as ``.pomdpx``.
      tolerance: allowed |row sum - 1| for probability rows.
      progress: called with the fraction read, from time to time, on large files.

    Raises:
      PomdpFormatError: for anything wrong with the input.
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    if data[:2] == b"\x1f\x8b":
        data = _gunzip(data, path)
    if format is None:  # the file name decides; without a known suffix, the content
        low = str(path).lower()
        low = low[:-3] if low.endswith(".gz") else low
        if low.endswith((".pomdp", ".pomdpx")):
            format = low.rsplit(".", 1)[1]
        else:
            format = "pomdpx" if _is_xml(data) else "pomdp"
    if format == "pomdpx":
        from jaxpomdp.io.pomdpx import read_pomdpx

        return read_pomdpx(data, path, tolerance=tolerance)
    if format == "pomdp":
        from jaxpomdp.io.cassandra import read_cassandra

        return read_cassandra(data, path, tolerance=tolerance, progress=progress)
    raise ValueError(f"unknown model format {format!r}; expected 'pomdp' or 'pomdpx'")


def load_pomdp(path: str | os.PathLike, *, format: Optional[str] = None,
               tolerance: float = DEFAULT_TOLERANCE,
               progress: Optional[ProgressFn] = None) -> TabularPOMDP:
    """Loads a ``.pomdp`` or ``.pomdpx`` file (optionally gzip-compressed).

    Args:
      path: the file.
      format: ``"pomdp"`` or ``"pomdpx"``, to override detection.
      tolerance: allowed |row sum - 1| for probability rows (default 1e-5).
      progress: optional callable receiving the fraction of the file parsed.

    Returns:
      The model as a :class:`~jaxpomdp.TabularPOMDP`, with the file's names.

    Raises:
      PomdpFormatError: the content is malformed (names file, line, column).
      OSError: the file cannot be read.

    Example:
      >>> import jaxpomdp
      >>> m = jaxpomdp.load_pomdp(jaxpomdp.problems.data_file("tiger.95"))
      >>> m.num_states, m.num_actions, m.num_observations
      (2, 3, 2)
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    return loads_pomdp(data, path, format=format, tolerance=tolerance, progress=progress)


def dumps_pomdp(model: TabularPOMDP) -> str:
    """The Cassandra ``.pomdp`` text of a model (see ``save_pomdp``)."""
    from jaxpomdp.io.cassandra import write_cassandra

    return write_cassandra(model)


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    """Writes a file atomically: a temporary file beside it, then a rename.

    Readers see either the old file or the whole new one, never half of it.
    """
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    directory = path.parent if str(path.parent) else Path(".")
    # a new name beside the file, created with the usual permissions (0666 less the
    # umask; mkstemp's 0600 would stay on the file after the rename)
    tmp = directory / f".{path.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as e:  # named by the file asked for, not the temporary one
        raise type(e)(e.errno, e.strerror, str(path)) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError) and e.filename is not None:
            raise type(e)(e.errno, e.strerror, str(path)) from None
        raise


def save_pomdp(model: TabularPOMDP, path: str | os.PathLike) -> None:
    """Writes a model as a Cassandra ``.pomdp`` file (gzip-compressed if ``.gz``).

    Reading the file back gives exactly the same model, names included: numbers
    are written with the shortest repr that round-trips. The write is atomic.
    """
    text = dumps_pomdp(model).encode("utf-8")
    if str(path).lower().endswith(".gz"):
        text = gzip.compress(text, mtime=0)
    atomic_write(path, text)
