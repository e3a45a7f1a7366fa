"""training.allocator: freed memory stays in the process, so a repeated large allocation does not
page-fault its pages in again. Run in a fresh interpreter each, since mallopt changes the process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# allocate and free a 64 MiB tensor 20 times; report the minor page faults of the last ten (the kept
# heap grows for the first few: torch's aligned blocks leave slivers that keep a freed block apart)
_PROBE = """
import json, resource, sys
import torch
from training.allocator import keep_freed_memory
kept = keep_freed_memory()
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    torch.ones(16 * 2**20)
before = faults()
for _ in range(10):
    torch.ones(16 * 2**20)
print(json.dumps({"kept": kept, "faults": faults() - before}))
"""


def _probe(**env: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _glibc() -> bool:
    if not sys.platform.startswith("linux") or "CS_GNU_LIBC_VERSION" not in getattr(os, "confstr_names", {}):
        return False
    return os.confstr("CS_GNU_LIBC_VERSION") is not None


glibc = pytest.mark.skipif(not _glibc(), reason="mallopt is glibc's")


@glibc
def test_freed_memory_is_reused_without_page_faults():
    kept = _probe()
    default = _probe(QTHA_KEEP_FREED_MEMORY="0")
    assert kept["kept"] is True and default["kept"] is False
    pages = 16 * 2**20 * 4 // os.sysconf("SC_PAGE_SIZE")  # one allocation's pages
    # glibc's defaults map each 64 MiB block afresh and fault its pages in (huge pages can serve it in
    # fewer faults, hence the loose bound); kept, the heap's pages are reused
    assert default["faults"] > 10 * pages // 1000
    assert kept["faults"] < 100
