"""The ground floor of nopeek: typed config sections, atomic files and checkpoints, named
random-key streams and bounded caches. Imports no other part of nopeek but its errors."""

from nopeek.core._cache import BoundedCache, fingerprint
from nopeek.core._config import Composed, Section, coerce, finite, option, raise_first_failure
from nopeek.core._io import atomic_write_bytes, atomic_write_text, load_params_into, read_json, save_params, write_json
from nopeek.core._keys import Stream, seed_key, step_key

__all__ = [
    "BoundedCache", "Composed", "Section", "Stream", "atomic_write_bytes", "atomic_write_text", "coerce", "fingerprint",
    "finite", "load_params_into", "option", "raise_first_failure", "read_json", "save_params", "seed_key", "step_key",
    "write_json",
]
