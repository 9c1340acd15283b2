"""The CPU allocator setting of a fit: freed large buffers stay in the process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# In a fresh interpreter: RSS after allocating, touching and freeing a 256 MiB tensor.
_PROBE = r"""
import json, os, sys
import torch
from mridip._allocator import keep_freed_memory

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

applied = keep_freed_memory()
again = keep_freed_memory()
before = rss()
x = torch.ones(64 * 2**20)  # 256 MiB, every page touched
del x
after = rss()
print(json.dumps({"applied": applied, "again": again, "kept_mib": after - before}))
"""


def _probe(env_value: str | None) -> dict:
    env = dict(os.environ)
    env.pop("MRIDIP_KEEP_FREED_MEMORY", None)
    if env_value is not None:
        env["MRIDIP_KEEP_FREED_MEMORY"] = env_value
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or not os.path.exists("/proc/self/statm"),
    reason="glibc's mallopt and /proc are Linux features",
)
def test_freed_buffers_stay_in_the_heap_unless_switched_off():
    on = _probe(None)
    assert on["applied"] and on["again"]
    # the freed 256 MiB stay resident for the next step to reuse
    assert on["kept_mib"] > 200
    off = _probe("0")
    assert not off["applied"]
    # glibc's default: a buffer that large is unmapped when freed
    assert off["kept_mib"] < 50
