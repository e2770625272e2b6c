"""Hand-made files for the tests of bad input: what no well-behaved writer produces."""

import io

import numpy as np


def npy_bytes(array, shape=None) -> bytes:
    """An .npy file of `array`, its header announcing `shape` (default: the array's own)."""
    header = np.lib.format.header_data_from_array_1_0(array)
    if shape is not None:
        header["shape"] = shape
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    buf.write(array.tobytes())
    return buf.getvalue()
