"""Identifiers: readable prefixed ids for entities created at run time."""

from __future__ import annotations

import secrets
import time


def new_id(prefix: str) -> str:
    """A sortable, unique id such as ``EVT-01J5...``: millisecond time + 40 random bits, base32."""
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    n = (int(time.time() * 1000) << 40) | secrets.randbits(40)
    chars = []
    for _ in range(18):
        n, r = divmod(n, 32)
        chars.append(alphabet[r])
    return f"{prefix}-{''.join(reversed(chars))}"
