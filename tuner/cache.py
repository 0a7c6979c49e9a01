"""Content-addressed on-disk cache for generated arrays (simulated data, preprocessed inputs).

An entry is one `.npz` file named by the sha256 of its key (canonical JSON), under
``$TUNER_CACHE_DIR/<namespace>/`` (default ``~/.cache/tuner``). When several processes ask for
the same entry at once, an exclusive `flock` on a per-entry lock file lets exactly one of them
build it; the file is written beside its final name and swapped in with `os.replace`, so a
reader never sees half an entry.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np


def cache_root() -> Path:
    """The cache directory: ``$TUNER_CACHE_DIR`` or ``~/.cache/tuner``."""
    return Path(os.environ.get("TUNER_CACHE_DIR", "~/.cache/tuner")).expanduser()


def key_digest(key: Mapping[str, Any]) -> str:
    """sha256 of the key as canonical JSON (sorted keys, no whitespace)."""
    canonical = json.dumps(key, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def cached_arrays(namespace: str, key: Mapping[str, Any],
                  build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The arrays stored under (namespace, key); `build()` them once if absent."""
    folder = cache_root() / namespace
    digest = key_digest(key)
    path = folder / f"{digest}.npz"
    if path.exists():
        return _load(path)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{digest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if path.exists():  # another process built it while we waited
            return _load(path)
        arrays = {name: np.asarray(value) for name, value in build().items()}
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{digest}-", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
        (folder / f"{digest}.json").write_text(json.dumps(key, sort_keys=True, indent=1, default=str))
    return arrays
