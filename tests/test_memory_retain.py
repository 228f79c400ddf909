"""``core.memory.retain_freed_memory``: a process that evaluates keeps what it frees (glibc without mmap
for large blocks, Arrow on the system allocator), unless ``OPENVPP_RETAIN_MEMORY=0``. Each case runs in
a fresh interpreter: the setting is for the whole process and is not undone."""

import json
import os
import subprocess
import sys

CHECK = """
import json, numpy as np, pyarrow as pa
from openvpp.core.memory import retain_freed_memory
first = retain_freed_memory()
again = retain_freed_memory(not first)        # a second call changes nothing
a = np.ones(50_000_000); del a                # 400 MB freed, then asked for again: still works
b = np.ones(50_000_000)
print(json.dumps({"first": first, "again": again, "pool": pa.default_memory_pool().backend_name,
                  "sum": float(b.sum())}))
"""


def _run(env_value: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OPENVPP_RETAIN_MEMORY"}
    if env_value is not None:
        env["OPENVPP_RETAIN_MEMORY"] = env_value
    out = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_kept_by_default_on_glibc():
    got = _run(None)
    assert got == {"first": True, "again": True, "pool": "system", "sum": 50_000_000.0}


def test_off_when_the_setting_says_so():
    got = _run("0")
    assert got["first"] is False and got["again"] is False and got["pool"] != "system"
    assert got["sum"] == 50_000_000.0
