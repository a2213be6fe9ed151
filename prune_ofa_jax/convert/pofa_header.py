"""The `.pofa` format's constants and its bounded header reader (convert/packed.py writes and
decodes the tensors; the layout is in its docstring).

Reading is bounded: nothing is allocated from a size the file declares before that size is
checked. The header length against the file size; then the header itself (`check_header`):
each section inside the data, each section's raw length equal to what the tensor's shape,
storage and value type imply, a zlib section no larger than deflate's 1032:1 ratio allows,
and the tensors' decoded size within what a file of this size can hold (MAX_EXPANSION). The
tensors' paths and shapes are checked against the model the header names
(pack_ckpt.load_packed) and each section's CRC-32 and index before it is decoded
(packed.unpack). Any violation is one PackError (a UserError: a command prints one line and
exits 2).
"""

from __future__ import annotations

import json
import pathlib
import struct
import zlib

import numpy as np

from prune_ofa_jax import errors, paths

MAGIC = b"POFA\x01\n"
VERSION = 1
CODECS = ("none", "zlib")
# Deflate emits at least ~2 bits per 258-byte match: no zlib stream inflates more than 1032x.
ZLIB_MAX_RATIO = 1032
# Decoded float32 bytes per byte of file at most: an all-zero bitmask tensor (1 bit of mask per
# 4-byte value, the mask deflated at ZLIB_MAX_RATIO) is the most a tensor can expand.
MAX_EXPANSION = 32 * ZLIB_MAX_RATIO
VALUE_BYTES = {"fp32": 4, "fp16": 2, "int8": 1}
SECTIONS = {"dense": ("values",), "bitmask": ("mask", "values"),
            "csr": ("indptr", "indices", "values")}


class PackError(errors.UserError):
    """Bad, corrupt, truncated or mismatched .pofa file (or bad pack arguments)."""


def csr_index_bytes(cols: int) -> int:
    return 2 if cols <= 65536 else 4


def local_file(path) -> pathlib.Path:
    """The file to read: itself, or a local copy of a gs:// file."""
    try:
        return paths.local(path)
    except FileNotFoundError as e:
        raise PackError(f"packed file not found: {path}") from e


def read_header(path) -> tuple[dict, int]:
    """(header, offset of the data) after checking magic, header length, header CRC, file
    length and the header's every declared size (`check_header`)."""
    local = local_file(path)  # messages name `path` (a bucket's file, not its local copy)
    if not local.is_file():
        raise PackError(f"packed file not found: {path}")
    size = local.stat().st_size
    with open(local, "rb") as f:
        start = f.read(len(MAGIC) + 8)
        if start[:len(MAGIC)] != MAGIC:
            raise PackError(f"{path}: not a .pofa file (bad magic); write one with "
                            "`python -m prune_ofa_jax.convert pack`")
        if len(start) < len(MAGIC) + 8:
            raise PackError(f"{path}: truncated ({size} bytes: no header)")
        (n,) = struct.unpack("<Q", start[len(MAGIC):])
        if n > size - len(start) - 4:  # before reading (allocating) n bytes
            raise PackError(f"{path}: truncated ({size} bytes: the header is cut; it "
                            f"declares {n} bytes)")
        head, crc = f.read(n), f.read(4)
    if zlib.crc32(head) != struct.unpack("<I", crc)[0]:
        raise PackError(f"{path}: corrupt header (CRC-32 mismatch)")
    try:
        header = json.loads(head)
    except (ValueError, RecursionError) as e:
        raise PackError(f"{path}: corrupt header (not JSON: {e})") from e
    data_start = len(MAGIC) + 8 + n + 4
    check_header(header, size, path)
    want = data_start + header["data_length"]
    if size != want:
        raise PackError(f"{path}: {'truncated' if size < want else 'trailing bytes'}: "
                        f"{size} bytes, the header promises {want}")
    return header, data_start


def _int(value, what: str, path) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise PackError(f"{path}: corrupt header ({what} is {value!r}, not a size)")
    return value


def _raw_lengths(meta: dict, values_raw: int, path) -> dict:
    """The raw length each section of `meta` must have (its values' from `values_raw`)."""
    shape, storage = meta["shape"], meta["storage"]
    vb = VALUE_BYTES[meta["values"]]
    size = int(np.prod(shape, dtype=object)) if shape else 1
    if storage == "dense":
        return {"values": size * vb}
    nnz, rest = divmod(values_raw, vb)
    if rest or nnz > size or len(shape) < 1:
        raise PackError(f"{path}: tensor {meta['path']}: {values_raw} bytes of {meta['values']} "
                        f"values for {size} elements")
    if storage == "bitmask":
        return {"mask": (size + 7) // 8, "values": nnz * vb}
    rows = int(np.prod(shape[1:], dtype=object)) if len(shape) > 1 else 1
    return {"indptr": (rows + 1) * 4, "indices": nnz * csr_index_bytes(shape[0]),
            "values": nnz * vb}


def check_header(header, file_size: int, path) -> None:
    """PackError unless every size the header declares fits the file (module docstring)."""
    if not (isinstance(header, dict) and isinstance(header.get("tensors"), list)
            and isinstance(header.get("model_config"), dict)
            and isinstance(header.get("task"), str)):
        raise PackError(f"{path}: corrupt header (no model_config, task or tensors)")
    data_length = _int(header.get("data_length"), "data_length", path)
    decoded = 0
    for meta in header["tensors"]:
        if not (isinstance(meta, dict) and isinstance(meta.get("path"), str)
                and isinstance(meta.get("shape"), list) and len(meta["shape"]) <= 8
                and meta.get("storage") in SECTIONS and meta.get("values") in VALUE_BYTES
                and meta.get("codec") in CODECS and isinstance(meta.get("sections"), dict)
                and sorted(meta["sections"]) == sorted(SECTIONS[meta["storage"]])):
            raise PackError(f"{path}: corrupt header (tensor entry {str(meta)[:80]})")
        name = meta["path"]
        shape = [_int(d, f"a dimension of {name}", path) for d in meta["shape"]]
        decoded += 4 * (int(np.prod(shape, dtype=object)) if shape else 1)
        if meta["values"] == "int8" and not (isinstance(meta.get("scale"), (int, float))
                                             and np.isfinite(meta["scale"])):
            raise PackError(f"{path}: corrupt header (tensor {name}: int8 without a scale)")
        secs = meta["sections"]
        for sec in secs.values():
            if not isinstance(sec, dict):
                raise PackError(f"{path}: corrupt header (tensor {name}: a section)")
            for key in ("offset", "length", "raw_length", "crc32"):
                _int(sec.get(key), f"{key} of a section of {name}", path)
        want = _raw_lengths(meta, secs["values"]["raw_length"], path)
        for sec_name, sec in secs.items():
            where = f"{path}: tensor {name}, section {sec_name}"
            if sec["offset"] + sec["length"] > data_length:
                raise PackError(f"{where}: bytes {sec['offset']}+{sec['length']} lie past the "
                                f"data ({data_length} bytes)")
            if sec["raw_length"] != want[sec_name]:
                raise PackError(f"{where}: {sec['raw_length']} raw bytes declared, its shape "
                                f"{shape} implies {want[sec_name]}")
            if (sec["raw_length"] != sec["length"] if meta["codec"] == "none"
                    else sec["raw_length"] > ZLIB_MAX_RATIO * max(sec["length"], 1)):
                raise PackError(f"{where}: {sec['length']} stored bytes cannot hold "
                                f"{sec['raw_length']} raw bytes ({meta['codec']})")
    if decoded > MAX_EXPANSION * file_size:
        raise PackError(f"{path}: declares {decoded:,} bytes of tensors, more than a "
                        f"{file_size:,}-byte .pofa file can hold")
