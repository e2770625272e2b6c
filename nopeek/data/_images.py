"""Reading one image file as floats in [0, 1]: one rule per Pillow mode (`IMAGE_MODES`), at
the mode's full range (a 16-bit image divided by 65535, not cut to 8 bits); files that cannot
be decoded, decompression bombs and links leading out of a data set's folder refused, each
in one line naming the file. `load_folder` builds a data set from them."""

from __future__ import annotations

import os

import numpy as np

from nopeek.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")

# How each Pillow mode becomes floats in [0, 1]: one rule per mode, at the mode's full range.
IMAGE_MODES = {
    "1": "1-bit: black 0, white 1; one channel",
    "L": "8-bit grey: value / 255; one channel",
    "I;16": "16-bit grey (also I;16B, I;16L): value / 65535; one channel",
    "I": "32-bit integers (how some 16-bit files open): value / 65535, values outside 0..65535 refused; one channel",
    "F": "32-bit floats: as they are, values outside [0, 1] refused; one channel",
    "LA": "grey with alpha: grey / 255 times alpha / 255 (composited over black); one channel",
    "P": "palette: the palette's colours / 255 (a transparent colour composited over black); one channel when "
         "every pixel is grey, else three",
    "RGB": "colour: value / 255; three channels (also CMYK, YCbCr, LAB, HSV, converted to RGB by Pillow)",
    "RGBA": "colour with alpha: colour / 255 times alpha / 255 (composited over black); three channels",
}
_OTHER_COLOUR = ("RGB", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")


def _over_black(a: np.ndarray) -> np.ndarray:
    """(H, W, C + 1) colour and alpha in [0, 1] -> (H, W, C), composited over black."""
    return a[..., :-1] * a[..., -1:]


def image_array(im, file: str) -> np.ndarray:
    """One decoded Pillow image as float32 (H, W, C) in [0, 1], by the rule for its mode
    (`IMAGE_MODES`).

    Raises:
      DataError: a mode without a rule, or values outside its range (naming the file).
    """
    mode = im.mode
    if mode == "1":
        arr = np.asarray(im, np.float32)
    elif mode == "L":
        arr = np.asarray(im, np.float32) / 255.0
    elif mode.startswith("I;16"):
        arr = np.asarray(im).astype(np.float32) / 65535.0
    elif mode == "I":
        raw = np.asarray(im)
        if raw.size and (raw.min() < 0 or raw.max() > 65535):
            raise DataError(f"{file}: 32-bit integer image with values in [{raw.min()}, {raw.max()}]; "
                            "nopeek reads 0..65535 (16 bits) from such files")
        arr = raw.astype(np.float32) / 65535.0
    elif mode == "F":
        arr = np.asarray(im, np.float32)
        if not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 1:
            raise DataError(f"{file}: floating-point image with values in [{np.nanmin(arr):.4g}, {np.nanmax(arr):.4g}]; "
                            "float images must lie in [0, 1]")
    elif mode in ("LA", "La"):
        arr = _over_black(np.asarray(im.convert("LA"), np.float32) / 255.0)
    elif mode in ("P", "PA"):
        alpha = mode == "PA" or im.has_transparency_data
        arr = np.asarray(im.convert("RGBA" if alpha else "RGB"), np.float32) / 255.0
        arr = _over_black(arr) if alpha else arr
        if np.all(arr[..., 0] == arr[..., 1]) and np.all(arr[..., 1] == arr[..., 2]):
            arr = arr[..., :1]
    elif mode in ("RGBA", "RGBa"):
        arr = _over_black(np.asarray(im.convert("RGBA"), np.float32) / 255.0)
    elif mode in _OTHER_COLOUR:
        arr = np.asarray(im.convert("RGB"), np.float32) / 255.0
    else:
        raise DataError(f"{file}: image mode {mode!r} has no rule here; save it as grey (L, I;16) or colour (RGB)")
    return arr[..., None] if arr.ndim == 2 else arr


def decode(file: str):
    """The decoded image of `file`, or DataError naming it (a corrupt file, or one over
    Pillow's decompression-bomb limit: refused before it is decoded)."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # a size Pillow only warns about
            im = Image.open(file)
            im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise DataError(f"{file}: refused unread: {err}") from None
    except Exception as err:  # Pillow's decoders raise many types on a broken file; all are the file's fault
        raise DataError(f"{file}: cannot read the image ({type(err).__name__}: {err})") from None
    return im


def inside(root: str, path: str, what: str) -> str:
    """`path` with links resolved, or DataError when it leads outside the folder `root`."""
    real = os.path.realpath(path)
    if os.path.commonpath([os.path.realpath(root), real]) != os.path.realpath(root):
        raise DataError(f"{path}: {what} links to {real}, outside the data set's folder {root}; nopeek reads only "
                        "files inside it (copy them in, or link the whole folder)")
    return real
