"""Image-file helpers for the loaders: listing image files and reading their size from the header only.
Decoding images into tensors is the backbone's job, not the scenario's."""
from __future__ import annotations

import os
import struct
import warnings
from typing import List, Optional, Tuple

from PIL import Image

#: file extensions (lower case) that count as images
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def is_image_file(name: str, extensions: Tuple[str, ...] = IMAGE_EXTENSIONS) -> bool:
    return name.lower().endswith(extensions)


def list_images(
    folder: str,
    recursive: bool = False,
    extensions: Tuple[str, ...] = IMAGE_EXTENSIONS,
    symlinks: bool = True,
) -> List[str]:
    """Sorted paths of the image files in ``folder`` (and its subfolders when ``recursive``). Hidden entries
    are skipped, and so are symbolic links to files when ``symlinks`` is False."""
    out: List[str] = []
    folders = [folder]
    while folders:
        with os.scandir(folders.pop()) as it:
            for e in it:
                if e.name.startswith("."):
                    continue
                if recursive and e.is_dir(follow_symlinks=False):
                    folders.append(e.path)
                elif e.is_file() and (symlinks or not e.is_symlink()) and is_image_file(e.name, extensions):
                    out.append(e.path)
    return sorted(out)


def image_size(path: str) -> Optional[Tuple[int, int]]:
    """(width, height) read from the file header without decoding pixels, or None if unreadable.

    PNGs are read from their IHDR chunk directly (PIL refuses to even open very large ones); other
    formats with PIL's lazy ``Image.open``."""
    try:
        with open(path, "rb") as f:
            head = f.read(24)
        if head[:8] == _PNG_SIGNATURE:
            if head[12:16] != b"IHDR":
                return None
            w, h = struct.unpack(">II", head[16:24])
            return (w, h) if w > 0 and h > 0 else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return im.size
    except (OSError, ValueError, struct.error, Image.DecompressionBombError):
        return None
