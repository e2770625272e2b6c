"""Reading a user's .npz archive without pickle, and without trusting its headers.

`numpy.load(..., allow_pickle=False)` already refuses object arrays, but it hands back the
raw bytes of a member that is not an .npy array (a pickle renamed `x.npy`, say), and it
allocates whatever shape a member's header announces before reading a byte of data (a
header claiming 1e13 elements asks for terabytes). So each member's header is read and
checked against the bytes the archive really holds before the array is loaded; every
problem is one error naming the file and the array.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np


def open_npz(path: str, error: type[Exception]):
    """`numpy.load(path, allow_pickle=False)` of an .npz archive, or `error` naming the file:
    missing, a folder, a single .npy array, or not a zip archive at all (read unread)."""
    if os.path.isdir(path):
        raise error(f"{path}: is a folder, not an .npz file")
    if not os.path.exists(path):
        raise error(f"{path}: no such file")
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError as err:
        raise error(f"{path}: cannot read ({err.strerror or err})") from None
    if head.startswith(b"\x93NUMPY"):
        raise error(f"{path}: a single .npy array, not an .npz archive of named arrays "
                    "(numpy.savez(path, x=..., y=...))")
    if not head.startswith(b"PK"):
        raise error(f"{path}: not an .npz archive (numpy.savez); it was not read (pickles and other formats "
                    "are refused unread)")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise error(f"{path}: not a readable .npz archive ({err})") from None


def _member(archive, key: str) -> str:
    names = archive.zip.namelist()
    return key + ".npy" if key + ".npy" in names else key


def _header(fp, key: str, path: str, error):
    """(shape, dtype) from an .npy header, or None when its version has no public reader."""
    what = f"array {key!r}" if key else "the file"
    try:
        version = np.lib.format.read_magic(fp)
    except ValueError:
        raise error(f"{path}: {what} is not an .npy array; refused unread, nothing was unpickled") from None
    try:
        return _read_header(fp, version)
    except ValueError as err:
        raise error(f"{path}: {what} has an unreadable .npy header ({err})") from None


def _read_header(fp, version):
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(fp)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(fp)
    else:
        return None
    return shape, dtype


def _check_declared(header, held: int, path: str, key: str | None, error) -> None:
    """Refuse, from its header alone, an object array or one announcing more bytes than the
    `held` bytes after its header (truncated, corrupt or hostile: nothing that size is
    allocated). `key`: the archive member's name, None for an .npy file."""
    if header is None:
        return
    shape, dtype = header
    subject = f"{path}: array {key!r} " if key is not None else f"{path}: "
    if dtype.hasobject:
        raise error(subject + ("is an object" if key is not None else "an object")
                    + " (pickled) array; refused without loading it (save numeric arrays)")
    declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if declared > held:
        raise error(f"{subject}announces shape {tuple(shape)} of {dtype} ({declared:,} bytes) but holds "
                    f"{held:,} bytes; the file is truncated or corrupt")


def npy_array(path: str, error: type[Exception]) -> np.ndarray:
    """The array of an .npy file, its header checked before anything is allocated (as
    `npz_array` does for an archive's members); no pickle is ever loaded.

    Raises:
      error: not an .npy file (an .npz archive, text, raw bytes), an object array, a header
        that announces more data than the file holds, or an unreadable file.
    """
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fp:
            if fp.read(4) == b"PK\x03\x04":
                raise error(f"{path}: an .npz archive; expected a .npy array")
            fp.seek(0)
            header = _header(fp, "", path, error)
            header_bytes = fp.tell()
    except OSError as err:
        raise error(f"cannot read {path}: expected a .npy array ({err.strerror or err})") from None
    _check_declared(header, size - header_bytes, path, None, error)
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise error(f"{path}: not a readable .npy array ({err})") from None


def npz_array(archive, key: str, path: str, error: type[Exception]) -> np.ndarray:
    """Array `key` of an archive from `open_npz`, checked before it is loaded.

    Raises:
      error: the member is not an .npy array (raw bytes: nothing is unpickled), holds
        Python objects, announces more data than it holds (truncated, corrupt or hostile:
        nothing that size is allocated), or cannot be read.
    """
    member = _member(archive, key)
    try:
        info = archive.zip.getinfo(member)
        with archive.zip.open(member) as fp:
            header = _header(fp, key, path, error)
            header_bytes = fp.tell()
    except (OSError, EOFError, KeyError, zipfile.BadZipFile) as err:
        raise error(f"{path}: cannot read array {key!r} ({err})") from None
    _check_declared(header, info.file_size - header_bytes, path, key, error)
    try:
        value = archive[key]
    except ValueError as err:
        if "allow_pickle" in str(err) or "Object arrays" in str(err):
            raise error(f"{path}: array {key!r} is an object (pickled) array; refused without loading it "
                        "(save numeric arrays)") from None
        raise error(f"{path}: cannot read array {key!r} ({err})") from None
    except MemoryError:
        raise error(f"{path}: array {key!r} is larger than this machine's memory") from None
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise error(f"{path}: cannot read array {key!r} ({err})") from None
    if not isinstance(value, np.ndarray):  # numpy hands back a non-.npy member's raw bytes
        raise error(f"{path}: array {key!r} is not an .npy array; refused unread, nothing was unpickled")
    return value
