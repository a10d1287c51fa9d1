"""Bytes on disk: the safetensors layout, written fast, and atomic replacement of a file.

A safetensors file is::

    8 bytes      N, the header's length (unsigned, little-endian)
    N bytes      a JSON header: {name: {"dtype", "shape", "data_offsets": [begin, end]},
                 ..., "__metadata__": {str: str}}, padded with spaces
    the rest     every tensor's raw little-endian bytes, back to back

``encode`` writes that layout with one copy of the tensors (the ``safetensors``
package makes a NumPy view of each tensor, which costs more than the data for small
models); reading stays with the ``safetensors`` package, which checks every offset.
``atomic_write`` puts the bytes in a temporary file beside the target, flushes and
syncs it, and renames it over the target: a reader (or a crash) sees the old file or
the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from collections.abc import Mapping

import safetensors.torch
import torch
from torch import Tensor

DTYPE_NAMES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}  # fmt: skip
HEADER_ALIGNMENT = 8  # the data section starts on an 8-byte boundary, as safetensors writes it


def encode(tensors: Mapping[str, Tensor], metadata: Mapping[str, str]) -> bytes:
    """The safetensors bytes of ``tensors`` (CPU or not) with string ``metadata``.

    Raises:
        ValueError: for a dtype that safetensors cannot hold.
    """
    unsupported = {name: t.dtype for name, t in tensors.items() if t.dtype not in DTYPE_NAMES}
    if unsupported or sys.byteorder != "little":  # rare: let the package handle (or refuse) it
        try:
            cpu = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
            return safetensors.torch.save(cpu, metadata=dict(metadata))
        except Exception as error:  # safetensors' own error types are not public
            raise ValueError(f"safetensors refused the tensors: {error}") from None
    header: dict[str, object] = {"__metadata__": dict(metadata)}
    chunks, offset = [], 0
    for name, tensor in tensors.items():
        size = tensor.numel() * tensor.element_size()
        dtype = DTYPE_NAMES[tensor.dtype]
        header[name] = {
            "dtype": dtype,
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + size],
        }
        # contiguous: a strided view (weight[:, ::2]) can flatten to a 1-D view whose
        # stride is not 1, and only a dense one can be read as bytes
        chunks.append(tensor.detach().contiguous().view(-1).view(torch.uint8).to("cpu"))
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(8 + len(text)) % HEADER_ALIGNMENT)
    data = torch.cat(chunks).numpy().tobytes() if chunks else b""
    return len(text).to_bytes(8, "little") + text + data


def check_folder(path: str | os.PathLike[str], what: str) -> None:
    """Refuse a ``path`` to write whose folder does not exist, or that is a folder.

    Raises:
        ValueError: ``{what} '{path}': no such folder`` (or ``: is a folder``).
    """
    if os.path.isdir(path):
        raise ValueError(f"{what} {os.fspath(path)!r}: is a folder; name a file in it")
    if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        raise ValueError(f"{what} {os.fspath(path)!r}: no such folder")


def atomic_write(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, rename it over ``path``.

    The rename is atomic on POSIX and on Windows (``os.replace``); the directory is
    synced afterwards where the platform allows, so that the rename survives a power cut.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    try:  # make the rename itself durable; not every platform can open a directory
        directory_descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(directory_descriptor)
    except OSError:
        pass
    finally:
        os.close(directory_descriptor)
