"""Writing files so that a kill never leaves half of one: a temporary file beside it, then a rename."""

import hashlib
import os
from pathlib import Path

CHUNK = 1 << 20  # bytes read at a time when hashing a file


def write_atomic(path, write, mode="wb"):
    """Call write(file) on a temporary file in path's folder, then rename it to path.

    E.g. write_atomic(path, lambda f: torch.save(state, f)) or write_atomic(path, lambda f: f.write(text), "w").
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, mode) as file:
            write(file)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path, text):
    write_atomic(path, lambda file: file.write(text), "w")


def file_digest(path, algorithm="sha256"):
    """The hex digest of a file's bytes (hashlib's algorithm name), read in chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
