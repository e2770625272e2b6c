"""The ground floor of nopeek: typed config sections, atomic files and checkpoints, safe .npz
reading, what a folder holds (`folder_kind`) and whether a command may write there, named random-key streams, bounded caches, the user's cache folder (compiled programs,
parsed data), XLA's CPU defaults (compile effort, Eigen's convolutions) and relief before the kernel's limit on memory maps. Imports no other part of nopeek but its errors."""

from nopeek.core._cache import BoundedCache, fingerprint
from nopeek.core._code_maps import map_count, map_limit, relieve_code_maps
from nopeek.core._folders import KINDS, MANIFEST, check_writable, folder_kind, foreign_files, list_in_manifest, publish_folder, resume_folder, staging_folder
from nopeek.core._config import Composed, Section, coerce, env_count, finite, option, raise_first_failure
from nopeek.core._io import (
    atomic_write_bytes, atomic_write_text, check_output_folder, load_params_into, make_output_folder, read_json,
    save_params, user_umask, write_json,
)
from nopeek.core._keys import NumpyStream, Stream, numpy_rng, seed_key, step_key
from nopeek.core._npz import npy_array, npz_array, open_npz
from nopeek.core._persistent import caching_disabled, enable_compilation_cache, user_cache_dir
from nopeek.core._xla_flags import (
    FAST_CONVOLUTION_FLAGS, FAST_CONVOLUTION_JAXLIB, ONE_OFF_COMPILE_OPTIONS, QUICK_COMPILE_FLAGS, XLA_DEFAULT_FLAGS,
    one_off_compiler_options, one_off_init, one_off_jit, set_xla_defaults, warn_if_backend_started,
)

__all__ = [
    "BoundedCache", "Composed", "env_count", "KINDS", "MANIFEST", "check_writable", "folder_kind", "foreign_files", "list_in_manifest", "publish_folder", "resume_folder", "staging_folder", "FAST_CONVOLUTION_FLAGS", "FAST_CONVOLUTION_JAXLIB", "ONE_OFF_COMPILE_OPTIONS", "QUICK_COMPILE_FLAGS", "NumpyStream", "Section", "Stream", "atomic_write_bytes", "atomic_write_text", "caching_disabled",
    "check_output_folder", "coerce", "enable_compilation_cache", "fingerprint", "finite", "load_params_into",
    "make_output_folder", "map_count", "map_limit", "npy_array", "numpy_rng", "npz_array", "one_off_compiler_options", "one_off_init", "one_off_jit", "open_npz", "option", "raise_first_failure", "read_json", "relieve_code_maps", "save_params",
    "seed_key", "set_xla_defaults", "warn_if_backend_started", "step_key", "user_cache_dir", "user_umask", "write_json", "XLA_DEFAULT_FLAGS",
]
