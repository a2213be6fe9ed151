"""The `.pofa` file: a real compressed checkpoint (what eval/compression.py only estimates).

Layout: b"POFA\\x01\\n", the header length (uint64 LE), the header (UTF-8 JSON), then the
tensor sections back to back. The header holds the model config, the task, the QAT
activation ranges when the model had QAT, and per tensor: path, shape, storage (dense |
bitmask | csr), value type (fp32 | fp16 | int8 with its scale), lossless codec, and per
section its offset, length and CRC-32. The header carries its own CRC-32 and the total file
length, so a corrupt or truncated file fails with one PackError, never with wrong weights.

Storage of one tensor (sections in this order):
  dense    values                       every element, row-major
  bitmask  mask, values                 1 bit per element (np.packbits of "bits != 0": a
                                        -0.0 is stored as a value, so fp32 round trips are
                                        bit-exact), then the nonzero values in order
  csr      indptr, indices, values      rows = output features (a Flax kernel [in, out] is
                                        transposed first), int32 row pointers, uint16 column
                                        indices (int32 past 65536 columns)
int8 values: symmetric, `q = clip(round(w / scale), -127, 127)` with `scale = max|w| / 127`
(quant/fake_quant.py: the QAT weight scale, computed from the weights exactly as QAT does),
so the restored `q * scale` equals the fake-quantised weights bit for bit. Codec "zlib"
deflates each section (lossless; most of the gain is on the index and on int8 values).

Reading is bounded (convert/pofa_header.py: every size the header declares is checked before
anything is allocated from it; each section's CRC-32 and index before it is decoded); any
violation is one PackError.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re
import struct
import zlib
from typing import Optional, Sequence

import numpy as np
from etils import epath

from prune_ofa_jax.convert.pofa_header import (  # noqa: F401 (read_header: packed's API)
    CODECS, MAGIC, VALUE_BYTES, VERSION, PackError, csr_index_bytes, local_file, read_header)
from prune_ofa_jax.eval import compression

FORMATS = ("bitmask", "csr", "auto", "dense")
# Embedding tables (--int8_embeddings): the word/position/type tables of every family.
EMBEDDING_PATTERNS = (r"(^|/)embeddings/[a-z_]+_embeddings/embedding$",)
DENSE_KERNEL_PATTERNS = (r"/kernel$",)


@dataclasses.dataclass(frozen=True)
class PackOptions:
    """fmt: storage of the prunable tensors (others are dense); auto = smallest per tensor.
    int8: Dense kernels as int8 values; int8_embeddings: embedding tables too; fp16: other
    float values at half precision (lossy); codec: lossless stage per section."""
    fmt: str = "auto"
    int8: bool = False
    int8_embeddings: bool = False
    fp16: bool = False
    codec: str = "zlib"
    prunable: Sequence[str] = ()
    int8_include: Sequence[str] = DENSE_KERNEL_PATTERNS

    def __post_init__(self):
        if self.fmt not in FORMATS:
            raise PackError(f"--format {self.fmt!r}: expected one of {FORMATS}")
        if self.codec not in CODECS:
            raise PackError(f"--codec {self.codec!r}: expected one of {CODECS}")


def _matches(path: str, patterns) -> bool:
    return any(re.search(p, path) for p in patterns)


# --- encoding one tensor -------------------------------------------------------------------
def int8_quantize(w: np.ndarray) -> tuple[np.ndarray, np.float32]:
    """(int8 q, float32 scale) as quant.fake_quant.quantize_symmetric_int (per tensor)."""
    w = np.asarray(w, np.float32)
    amax = np.float32(np.max(np.abs(w))) if w.size else np.float32(0)
    scale = np.float32(amax / np.float32(127)) if amax > 0 else np.float32(1.0)
    q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
    return q, scale


def _value_sections(values: np.ndarray, vtype: str) -> np.ndarray:
    return values.astype({"fp32": "<f4", "fp16": "<f2", "int8": "i1"}[vtype])


def encode_tensor(w: np.ndarray, storage: str, vtype: str) -> tuple[dict, Optional[float]]:
    """{section name: raw bytes} and the int8 scale (None for float values)."""
    scale = None
    if vtype == "int8":
        vals, scale = int8_quantize(w)
        scale = float(scale)
    else:
        vals = np.asarray(w, np.float32)
    if storage == "dense":
        return {"values": _value_sections(vals, vtype).tobytes()}, scale
    if storage == "bitmask":
        nz = np.asarray(w, np.float32).view(np.uint32).reshape(-1) != 0
        return {"mask": np.packbits(nz).tobytes(),
                "values": _value_sections(vals.reshape(-1)[nz], vtype).tobytes()}, scale
    if storage == "csr":
        rows_first = vals.reshape(vals.shape[0], -1).T  # [out, in]
        bits = np.ascontiguousarray(np.asarray(w, np.float32).reshape(w.shape[0], -1).T)
        nz = bits.view(np.uint32) != 0  # the float pattern, as the estimate counts it
        indptr = np.concatenate([[0], np.cumsum(nz.sum(axis=1))]).astype("<i4")
        cols = np.nonzero(nz)[1]
        idx_dtype = "<u2" if rows_first.shape[1] <= 65536 else "<i4"
        return {"indptr": indptr.tobytes(), "indices": cols.astype(idx_dtype).tobytes(),
                "values": _value_sections(rows_first[nz], vtype).tobytes()}, scale
    raise PackError(f"unknown storage {storage!r}")


def decode_tensor(meta: dict, sections: dict) -> np.ndarray:
    """float32 array of meta['shape'] from the raw sections (their lengths already checked
    against the shape by `check_header`); PackError when a bitmask or csr index is invalid."""
    shape, vtype = tuple(meta["shape"]), meta["values"]
    dtype = {"fp32": "<f4", "fp16": "<f2", "int8": "i1"}[vtype]
    vals = np.frombuffer(sections["values"], dtype)
    if vtype == "int8":
        vals = vals.astype(np.float32) * np.float32(meta["scale"])
    else:
        vals = vals.astype(np.float32)
    size = int(np.prod(shape))
    if meta["storage"] == "dense":
        return vals.reshape(shape).copy()
    if meta["storage"] == "bitmask":
        nz = np.unpackbits(np.frombuffer(sections["mask"], np.uint8), count=size).astype(bool)
        if int(nz.sum()) != vals.size:
            raise PackError(f"tensor {meta['path']}: its mask has {int(nz.sum())} ones for "
                            f"{vals.size} values")
        out = np.zeros(size, np.float32)
        out[nz] = vals
        return out.reshape(shape)
    rows, cols = int(np.prod(shape[1:])), shape[0]
    indptr = np.frombuffer(sections["indptr"], "<i4")
    indices = np.frombuffer(sections["indices"], f"<u{csr_index_bytes(cols)}").astype(np.int64)
    if (indptr[0] != 0 or indptr[-1] != vals.size or np.any(np.diff(indptr) < 0)
            or (indices.size and int(indices.max()) >= cols)):
        raise PackError(f"tensor {meta['path']}: invalid csr index")
    dense = np.zeros((rows, cols), np.float32)
    dense[np.repeat(np.arange(rows), np.diff(indptr)), indices] = vals
    return np.ascontiguousarray(dense.T).reshape(shape)


def _choose(w: np.ndarray, path: str, opts: PackOptions) -> tuple[str, str]:
    """(storage, value type) of one tensor."""
    int8 = ((opts.int8 and _matches(path, opts.int8_include) and w.ndim == 2)
            or (opts.int8_embeddings and _matches(path, EMBEDDING_PATTERNS)))
    vtype = "int8" if int8 else ("fp16" if opts.fp16 else "fp32")
    if not (_matches(path, opts.prunable) and w.ndim == 2) or opts.fmt == "dense":
        return "dense", vtype
    if opts.fmt != "auto":
        return opts.fmt, vtype
    sizes = {f: compression.tensor_bytes(w, f, VALUE_BYTES[vtype])
             for f in ("dense", "bitmask", "csr")}
    return min(sizes, key=sizes.get), vtype


# --- the file -----------------------------------------------------------------------------
def pack(flat_params: dict, model_config: dict, task: str, out, opts: PackOptions,
         quant: Optional[dict] = None) -> dict:
    """Writes `out` (via `out.tmp`, renamed); returns the header. flat_params: {path: array}."""
    out = pathlib.Path(out)
    tensors, blobs, offset = [], [], 0
    for path in sorted(flat_params):
        w = np.asarray(flat_params[path], np.float32)
        storage, vtype = _choose(w, path, opts)
        sections, scale = encode_tensor(w, storage, vtype)
        meta = {"path": path, "shape": list(w.shape), "storage": storage, "values": vtype,
                "scale": scale, "codec": opts.codec, "nnz": int(np.count_nonzero(w)),
                "sections": {}}
        for name, raw in sections.items():
            data = zlib.compress(raw, 6) if opts.codec == "zlib" else raw
            meta["sections"][name] = {"offset": offset, "length": len(data),
                                      "raw_length": len(raw), "crc32": zlib.crc32(data)}
            blobs.append(data)
            offset += len(data)
        tensors.append(meta)
    header = {"format": "pofa", "version": VERSION, "model_config": model_config, "task": task,
              "options": {"format": opts.fmt, "int8": opts.int8, "fp16": opts.fp16,
                          "int8_embeddings": opts.int8_embeddings, "codec": opts.codec},
              "quant": quant, "tensors": tensors, "data_length": offset}
    head = json.dumps(header, sort_keys=True).encode()
    head_crc = struct.pack("<I", zlib.crc32(head))
    tmp = out.with_name(out.name + ".tmp")
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(tmp, "wb") as f:
        f.write(MAGIC + struct.pack("<Q", len(head)) + head + head_crc)
        for b in blobs:
            f.write(b)
    tmp.replace(out)
    return header


def _inflate(data: bytes, raw_length: int, where: str) -> bytes:
    """zlib-decompressed `data`, never more than raw_length + 1 bytes of it."""
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(data, raw_length + 1)
    except zlib.error as e:
        raise PackError(f"{where}: corrupt (zlib: {e})") from e
    if len(raw) != raw_length or not inflater.eof:
        raise PackError(f"{where}: corrupt (inflates to other than its declared "
                        f"{raw_length} bytes)")
    return raw


def unpack(path, header: Optional[dict] = None, start: Optional[int] = None
           ) -> tuple[dict, dict, str, Optional[dict]]:
    """({path: float32 array}, model_config dict, task, quant or None); every section's
    CRC-32 is checked before it is decoded. `header`, `start`: read_header's, when the caller
    has them (and has checked the tensors against the model: pack_ckpt.load_packed)."""
    local = local_file(path)
    if header is None:
        header, start = read_header(local)
    flat = {}
    with open(local, "rb") as f:
        for meta in header["tensors"]:
            sections = {}
            for name, s in meta["sections"].items():
                where = f"{path}: tensor {meta['path']} (section {name})"
                f.seek(start + s["offset"])
                data = f.read(s["length"])
                if len(data) != s["length"] or zlib.crc32(data) != s["crc32"]:
                    raise PackError(f"{path}: corrupt tensor {meta['path']} (section {name}: "
                                    "CRC-32 mismatch); the file is damaged, pack it again")
                raw = _inflate(data, s["raw_length"], where) if meta["codec"] == "zlib" \
                    else data
                if len(raw) != s["raw_length"]:
                    raise PackError(f"{path}: corrupt tensor {meta['path']} (section {name})")
                sections[name] = raw
            flat[meta["path"]] = decode_tensor(meta, sections)
    return flat, header["model_config"], header["task"], header.get("quant")


def is_packed(path) -> bool:
    p = epath.Path(path)
    try:
        if not p.is_file():
            return False
        with p.open("rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def shapes(header: dict) -> dict:
    """{tensor path: shape} the header declares (what check_model compares, before decoding)."""
    return {t["path"]: tuple(t["shape"]) for t in header["tensors"]}


def check_model(flat: dict, expected: dict, source) -> None:
    """PackError unless `flat` (arrays, or shapes) has exactly the tensors (paths, shapes) of
    `expected`."""
    shape = lambda x: tuple(getattr(x, "shape", x))  # noqa: E731
    missing = sorted(set(expected) - set(flat))
    extra = sorted(set(flat) - set(expected))
    bad = [f"{p}: file {shape(flat[p])}, model {shape(expected[p])}"
           for p in sorted(set(flat) & set(expected)) if shape(flat[p]) != shape(expected[p])]
    if missing or extra or bad:
        raise PackError(f"{source} does not hold this model: " + "; ".join(filter(None, [
            f"missing {missing[:3]}" if missing else "", f"unexpected {extra[:3]}" if extra
            else "", f"shape {bad[:3]}" if bad else ""])))


def size_summary(header: dict, file_bytes: int) -> dict:
    """Bytes per storage and value type, from the header."""
    by = {}
    for t in header["tensors"]:
        key = f"{t['storage']}/{t['values']}"
        by[key] = by.get(key, 0) + sum(s["length"] for s in t["sections"].values())
    return {"file_bytes": file_bytes, "by_storage": by,
            "header_bytes": file_bytes - header["data_length"]}

