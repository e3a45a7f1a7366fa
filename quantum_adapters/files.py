"""Writing files and folders so that a reader never sees half of one, and reading JSON lines.

Every artifact, checkpoint, marker and report in qtha is written the same way: into a temporary name
beside the target, then renamed over it (``os.replace`` is atomic on one file system), so a run killed
mid-write leaves the old file or none, never a torn one. These helpers are that pattern, once; they
live in ``quantum_adapters`` because training, evaluation and serving all write such files.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "atomic_write_json", "read_jsonl", "staged_dir", "staged_file"]


@contextmanager
def staged_file(path: str | os.PathLike, mode: int | None = None) -> Iterator[Path]:
    """A temporary path beside ``path`` to write (or have a compiler write) the file; on success it
    is renamed over ``path``, ``mode`` (e.g. 0o444) set first so the file appears with its final
    permissions. On any error the temporary file is removed and ``path`` is untouched."""
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike, data: str | bytes, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` through a temporary file beside it (:func:`staged_file`); ``mode``
    (e.g. 0o444) is set before the rename, so the file appears with its final permissions."""
    with staged_file(path, mode) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj: Any, **dumps: Any) -> Path:
    """``atomic_write`` of ``json.dumps(obj, **dumps)`` plus a final newline."""
    return atomic_write(path, json.dumps(obj, **dumps) + "\n")


@contextmanager
def staged_dir(target: str | os.PathLike, replace: bool = False) -> Iterator[Path]:
    """Build a folder under a temporary name beside ``target``; on success rename it to ``target``.

    ``replace=True`` removes an existing ``target`` first (the rename itself is atomic; the removal
    just before it is not, so a crash between the two leaves no target rather than a torn one). On
    any error the temporary folder is removed and ``target`` is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        if replace and target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def read_jsonl(path: str | os.PathLike, torn_tail: bool = False) -> list[dict[str, Any]]:
    """Every record of a JSON-lines file (blank lines skipped); a bad line raises ``ValueError``
    naming the file and line. ``torn_tail=True`` drops a last line that is not JSON and has no
    newline: a write cut short by a kill, in a file that is appended to record by record."""
    path = Path(path)
    text = path.read_text()
    lines = text.splitlines()
    out = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as err:
            if torn_tail and number == len(lines) and not text.endswith("\n"):
                break
            raise ValueError(f"{path}:{number}: not a JSON record ({err.msg}): {line[:80]!r}") from None
    return out
