"""What nopeek keeps between runs on the user's machine: compiled XLA programs and parsed data.

The folder is `$NOPEEK_CACHE_DIR`, else `$XDG_CACHE_HOME/nopeek`, else `~/.cache/nopeek`.
`NOPEEK_NO_CACHE=1` turns both caches off. Neither changes a result: a compiled program is
looked up by a hash of its HLO, the compile options, the jax/jaxlib versions and the
backend; a parsed data set by a hash of its source file, and its own bytes are checked
against a digest stored beside them before use.

The compilation cache is JAX's own (`jax_compilation_cache_dir`), with a size bound so that
its reads and writes take a file lock: runs sharing the folder at the same time (a sweep's
shards, a test suite, two terminals) never read a half-written entry.
"""

from __future__ import annotations

import os
import sys

#: Bound on the compilation cache's size; beyond it the least recently used entries go.
COMPILATION_CACHE_BYTES = 2 * 1024**3


def caching_disabled() -> bool:
    """NOPEEK_NO_CACHE is set to anything but "", "0" or "false"."""
    return os.environ.get("NOPEEK_NO_CACHE", "").strip().lower() not in ("", "0", "false", "no")


def user_cache_dir(*parts: str) -> str | None:
    """The cache folder (joined with `parts`), created if needed; None when caching is
    disabled or the folder cannot be created."""
    if caching_disabled():
        return None
    root = os.environ.get("NOPEEK_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "nopeek")
    path = os.path.join(root, *parts)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return None
    return path if os.access(path, os.W_OK) else None


def _settings(folder: str) -> dict:
    return {"jax_compilation_cache_dir": folder,
            "jax_persistent_cache_min_compile_time_secs": 0.0,  # nopeek's programs compile in 0.05-1 s each
            "jax_persistent_cache_min_entry_size_bytes": 0,
            "jax_compilation_cache_max_size": COMPILATION_CACHE_BYTES}


def enable_compilation_cache() -> str | None:
    """Point JAX's persistent compilation cache at the user's cache folder, unless the user
    set one (JAX_COMPILATION_CACHE_DIR or jax.config) or NOPEEK_NO_CACHE is set.

    Before jax is imported this only sets environment variables (JAX reads them at import,
    and child processes inherit them); after, it updates jax.config. Returns the folder in
    use, or None.
    """
    if caching_disabled():
        return None
    if "jax" in sys.modules:
        import jax

        if jax.config.jax_compilation_cache_dir:
            return jax.config.jax_compilation_cache_dir
        folder = user_cache_dir("xla")
        if folder is None:
            return None
        for name, value in _settings(folder).items():
            jax.config.update(name, value)
        return folder
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return os.environ["JAX_COMPILATION_CACHE_DIR"]
    folder = user_cache_dir("xla")
    if folder is None:
        return None
    for name, value in _settings(folder).items():
        os.environ.setdefault(name.upper(), str(value))
    return folder
