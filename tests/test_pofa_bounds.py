"""The .pofa reader is bounded: crafted files (a 2^40-byte header length, a 431-byte file
declaring a 12000 x 12000 tensor, a zip-bomb section, a header whose sizes lie) are each one
PackError, found before anything the size of their claims is allocated (tracemalloc's peak
stays far below it), and through the CLI one `error:` line, exit status 2, nothing written."""

import json
import struct
import tracemalloc
import warnings
import zlib

import numpy as np
import pytest

from prune_ofa_jax.convert import __main__ as convert_cli
from prune_ofa_jax.convert import hf, pack_ckpt, packed
from prune_ofa_jax.models import bert
from prune_ofa_jax.models import config as model_config

BOMB_BYTES = 300 * 2**20  # what the zip-bomb section inflates to, unbounded
PEAK_LIMIT = 40 * 2**20   # what reading any crafted file below may allocate at most


def _write(path, header: dict, blobs: list) -> None:
    """A .pofa file as packed.pack lays it out, from a header and its sections' bytes in
    order (offsets, lengths, CRCs and data_length recomputed)."""
    offset, flat = 0, iter(blobs)
    for meta in header["tensors"]:
        for sec in meta["sections"].values():
            data = next(flat)
            sec.update(offset=offset, length=len(data), crc32=zlib.crc32(data))
            offset += len(data)
    header["data_length"] = offset
    head = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(packed.MAGIC + struct.pack("<Q", len(head)) + head
                + struct.pack("<I", zlib.crc32(head)))
        for b in blobs:
            f.write(b)


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """(path, header, section blobs) of an honest zlib .pofa of a tiny BERT (no jit)."""
    cfg = model_config.by_name("bert-base-uncased", num_layers=1, hidden_size=32, num_heads=2,
                               intermediate_size=64, max_position_embeddings=64,
                               vocab_size=64)
    shapes = hf.flatten(bert.abstract_params(bert.BertFamily(cfg, "mlm")))
    rng = np.random.default_rng(0)
    flat = {k: rng.normal(0, 0.02, s.shape).astype(np.float32) for k, s in shapes.items()}
    path = tmp_path_factory.mktemp("pofa") / "good.pofa"
    header = packed.pack(flat, cfg.to_dict(), "mlm", path, pack_ckpt.default_options())
    raw = path.read_bytes()
    start = len(raw) - header["data_length"]
    blobs = [raw[start + s["offset"]:start + s["offset"] + s["length"]]
             for t in header["tensors"] for s in t["sections"].values()]
    return path, header, blobs


def _bomb() -> bytes:
    """BOMB_BYTES of zeros deflated (~300 KB), built without holding them."""
    z, zeros = zlib.compressobj(9), bytes(2**20)
    return b"".join([z.compress(zeros) for _ in range(BOMB_BYTES // 2**20)] + [z.flush()])


def _crafted(tmp_path, good) -> dict:
    """name: (file, what the PackError says, bytes the file claims)."""
    _, header, blobs = good
    out = {}
    huge = tmp_path / "huge_header.pofa"
    huge.write_bytes(packed.MAGIC + struct.pack("<Q", 2**40) + b"{}" * 50)
    out["huge_header"] = (huge, "the header is cut", 2**40)
    # 431 bytes in the issue (1 KB here, with a model config): one csr tensor of 12000 x 12000,
    # its index deflated to ~70 bytes
    indptr = zlib.compress(bytes(4 * 12001), 9)
    big = {"model_config": header["model_config"], "task": "mlm", "quant": None, "tensors": [
        {"path": "backbone/encoder/layer_0/ffn/output/kernel", "shape": [12000, 12000],
         "storage": "csr", "values": "fp32", "scale": None, "codec": "zlib", "nnz": 0,
         "sections": {"indptr": {"raw_length": 4 * 12001}, "indices": {"raw_length": 0},
                      "values": {"raw_length": 0}}}]}
    _write(tmp_path / "big_tensor.pofa", big, [indptr, zlib.compress(b""), zlib.compress(b"")])
    out["big_tensor"] = (tmp_path / "big_tensor.pofa", "more than a", 4 * 12000 * 12000)
    # the largest section (the word embeddings) replaced by a zip bomb, its raw length kept
    bomb = json.loads(json.dumps(header))
    sizes = [s["length"] for t in header["tensors"] for s in t["sections"].values()]
    at = int(np.argmax(sizes))
    _write(tmp_path / "bomb.pofa", bomb, blobs[:at] + [_bomb()] + blobs[at + 1:])
    out["zip_bomb"] = (tmp_path / "bomb.pofa", "inflates to other than", BOMB_BYTES)
    lying = json.loads(json.dumps(header))  # a section declaring 10x its shape's raw bytes
    lying["tensors"][0]["sections"]["values"]["raw_length"] *= 10
    _write(tmp_path / "lying.pofa", lying, list(blobs))
    out["raw_length"] = (tmp_path / "lying.pofa", "raw bytes declared, its shape", 0)
    past = json.loads(json.dumps(header))
    _write(tmp_path / "past.pofa", past, list(blobs))
    raw = (tmp_path / "past.pofa").read_bytes()
    head = json.loads(raw[len(packed.MAGIC) + 8:len(raw) - past["data_length"] - 4])
    head["tensors"][-1]["sections"]["values"]["offset"] += 10**9  # past the data
    enc = json.dumps(head).encode()
    (tmp_path / "past.pofa").write_bytes(
        packed.MAGIC + struct.pack("<Q", len(enc)) + enc + struct.pack("<I", zlib.crc32(enc))
        + raw[len(raw) - past["data_length"]:])
    out["section_past_data"] = (tmp_path / "past.pofa", "lie past the data", 0)
    nested = b"[" * 100_000 + b"]" * 100_000  # JSON nested past Python's recursion limit
    (tmp_path / "nested.pofa").write_bytes(
        packed.MAGIC + struct.pack("<Q", len(nested)) + nested
        + struct.pack("<I", zlib.crc32(nested)))
    out["nested_json"] = (tmp_path / "nested.pofa", "corrupt header", 0)
    return out


def test_crafted_files_fail_before_allocating_what_they_declare(good, tmp_path):
    path, _, _ = good
    pack_ckpt.load_packed(path)  # the honest file reads (and warms the imports up)
    for name, (file, message, claimed) in _crafted(tmp_path, good).items():
        tracemalloc.start()
        try:
            with pytest.raises(packed.PackError, match=message):
                pack_ckpt.load_packed(file)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < PEAK_LIMIT, (name, peak)
        assert not claimed or peak < claimed // 5, (name, peak, claimed)


def test_crafted_files_are_one_error_line_exit_2_nothing_written(good, tmp_path, capsys):
    crafted = _crafted(tmp_path, good)
    for name, (file, message, _) in crafted.items():
        for command, flag in (("unpack", "--packed"), ("export-hf", "--ckpt")):
            out = tmp_path / f"{name}.{command}"
            capsys.readouterr()
            with warnings.catch_warnings():
                rc = convert_cli.main([command, flag, str(file), "--workdir", str(out)])
            err = capsys.readouterr().err.strip().splitlines()
            assert rc == 2 and len(err) == 1 and err[0].startswith("error: "), (name, err)
            assert message in err[0] and not out.exists(), (name, err)
            assert not out.with_name(out.name + ".tmp").exists()
