"""The .pofa compressed checkpoint (convert pack/unpack) and the int8 ONNX runtime path:
bit-exact fp32 and int8-exact round trips, corrupt/truncated/foreign/wrong-model files, the
CLI, and the int8 graph against the fake-quant model it was exported from."""

import re
import warnings

import jax
import numpy as np
import pytest
import train_helpers

from prune_ofa_jax.convert import hf, pack_ckpt, packed, params_ckpt, qat_ranges
from prune_ofa_jax.models import bert
from prune_ofa_jax.models import config as model_config
from prune_ofa_jax.quant import fake_quant, qat
from prune_ofa_jax.sparsity import masks as masks_lib


def _bits(a):
    return np.ascontiguousarray(np.asarray(a, np.float32)).view(np.uint32)


@pytest.fixture(scope="module")
def sparse_cls(tiny_ckpts):
    """The session's tiny BERT as a classifier (fresh head), its prunable kernels 80 % zero,
    plus odd values."""
    pre, cfg, _ = params_ckpt.load_params(tiny_ckpts["bert"])
    flat = {k: np.array(v) for k, v in hf.flatten(pre).items() if k.startswith("backbone/")}
    rng = np.random.default_rng(0)
    flat["classifier/kernel"] = rng.normal(0, 0.02, (cfg.hidden_size, 2)).astype(np.float32)
    flat["classifier/bias"] = np.zeros(2, np.float32)
    cfg = cfg.replace(num_labels=2)
    for path, w in flat.items():
        if any(re.search(p, path) for p in masks_lib.DEFAULT_INCLUDE) and w.ndim == 2:
            w[np.abs(w) < np.quantile(np.abs(w), 0.8)] = 0.0
    k = "backbone/encoder/layer_0/attention/query/kernel"
    flat[k][0, :3] = (-0.0, 1e-42, -3.5)  # a signed zero, a denormal: bits must survive
    return hf.unflatten(flat), cfg


def test_round_trips_bit_exact_and_int8_exact(sparse_cls, tmp_path):
    params, cfg = sparse_cls
    flat = pack_ckpt.flat_numpy(params)
    sizes = {}
    for fmt, codec in (("bitmask", "none"), ("csr", "none"), ("auto", "zlib"), ("dense", "none")):
        out = tmp_path / f"{fmt}.pofa"
        r = pack_ckpt.pack_params(params, cfg, "cls", out,
                                  pack_ckpt.default_options(fmt=fmt, codec=codec))
        back, cfg2, task, quant = pack_ckpt.load_packed(out)
        assert (cfg2, task, quant) == (cfg, "cls", None)
        got = hf.flatten(back)
        for path, w in flat.items():
            np.testing.assert_array_equal(_bits(got[path]), _bits(w), err_msg=(fmt, path))
        if codec == "none":  # on disk: the estimated layout + the header, nothing else
            assert r["file_bytes"] - r["header_bytes"] == r["layout_bytes"] - 0
        sizes[fmt] = r["layout_bytes"]
    assert sizes["auto"] <= min(sizes["bitmask"], sizes["csr"]) < sizes["dense"]
    out = tmp_path / "int8.pofa"
    r = pack_ckpt.pack_params(params, cfg, "cls", out, pack_ckpt.default_options(
        int8=True, int8_embeddings=True))
    got = hf.flatten(pack_ckpt.load_packed(out)[0])
    for path, w in flat.items():
        if w.ndim == 2:  # every Dense kernel and embedding table: the fake-quant values
            q, scale = packed.int8_quantize(w)
            np.testing.assert_array_equal(_bits(got[path]), _bits(q * scale), err_msg=path)
        else:
            np.testing.assert_array_equal(_bits(got[path]), _bits(w), err_msg=path)
    for path in ("backbone/encoder/layer_0/attention/query/kernel",  # = QAT's, bit for bit
                 "backbone/embeddings/word_embeddings/embedding"):
        np.testing.assert_array_equal(
            _bits(got[path]), _bits(fake_quant.fake_quant_symmetric(flat[path])), err_msg=path)
    assert r["x_vs_fp32"] > 3.5 and r["prunable_sparsity"] == pytest.approx(0.8, abs=0.01)
    half = tmp_path / "fp16.pofa"
    pack_ckpt.pack_params(params, cfg, "cls", half, pack_ckpt.default_options(fp16=True))
    got = hf.flatten(pack_ckpt.load_packed(half)[0])
    k = "backbone/encoder/layer_1/ffn/output/kernel"
    np.testing.assert_allclose(got[k], flat[k], rtol=1e-3, atol=1e-7)
    assert np.array_equal(got[k] == 0, flat[k] == 0)


def test_corrupt_truncated_foreign_and_wrong_model_files(sparse_cls, tmp_path):
    params, cfg = sparse_cls
    good = tmp_path / "m.pofa"
    pack_ckpt.pack_params(params, cfg, "cls", good, pack_ckpt.default_options(int8=True))
    raw = good.read_bytes()
    header, start = packed.read_header(good)

    def variant(name, data):
        (tmp_path / name).write_bytes(data)
        return tmp_path / name

    flip = lambda i: raw[:i] + bytes([raw[i] ^ 0x10]) + raw[i + 1:]  # noqa: E731
    cases = {
        variant("data.pofa", flip(len(raw) - 5)): "corrupt tensor",
        variant("head.pofa", flip(len(packed.MAGIC) + 8 + 20)): "corrupt header",
        variant("cut.pofa", raw[:len(raw) - 100]): "truncated",
        variant("cuthead.pofa", raw[:start - 30]): "truncated",
        variant("tail.pofa", raw + b"x"): "trailing bytes",
        variant("foreign.pofa", b"\x00" * 64): "not a .pofa file",
    }
    for path, message in cases.items():
        with pytest.raises(packed.PackError, match=message):
            pack_ckpt.load_packed(path)
    other = cfg.replace(num_labels=3)
    with pytest.raises(packed.PackError, match=r"holds another model: config differs in "
                                               r"\['num_labels'\]"):
        pack_ckpt.load_packed(good, model_config=other)
    with pytest.raises(packed.PackError, match="holds a 'cls' model, expected 'qa'"):
        pack_ckpt.load_packed(good, task="qa")
    flat = hf.flatten(params)
    del flat["classifier/bias"]
    pack_ckpt.pack_params(hf.unflatten(flat), cfg, "cls", tmp_path / "short.pofa",
                          pack_ckpt.default_options())
    with pytest.raises(packed.PackError, match=r"does not hold this model: missing "
                                               r"\['classifier/bias'\]"):
        pack_ckpt.load_packed(tmp_path / "short.pofa")


def _cli(capsys, *args) -> tuple[int, str, str]:
    """The CLI in this process (its imports are already paid): (status, stdout, stderr)."""
    import transformers  # pylint: disable=import-outside-toplevel

    from prune_ofa_jax.convert import __main__ as cli  # pylint: disable=import-outside-toplevel
    capsys.readouterr()
    verbosity = transformers.utils.logging.get_verbosity()
    with warnings.catch_warnings():  # the CLI silences library chatter: keep that local
        rc = cli.main([str(a) for a in args])
    transformers.utils.logging.set_verbosity(verbosity)
    out = capsys.readouterr()
    return rc, out.out, out.err


def _qat_stats(model_q, params, batch):
    stats = qat.init_quant_stats(model_q, batch[0])
    for _ in range(2):
        _, upd = model_q.apply({"params": params, "quant_stats": stats}, *batch,
                               mutable=["quant_stats"])
        stats = upd["quant_stats"]
    return stats


def _batch(cfg, n=4, length=12):
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 999, (n, length))
    mask = np.ones_like(ids)
    mask[1, 7:] = mask[3, 3:] = 0
    ids[mask == 0] = cfg.pad_token_id
    return ids, mask, np.zeros_like(ids)


def test_int8_exact_reads_the_cpu_flags(tmp_path):
    """int8 graphs are exact only where the CPU's int8 dot products accumulate in int32."""
    from prune_ofa_jax.runtime import ort  # pylint: disable=import-outside-toplevel
    info = tmp_path / "cpuinfo"
    info.write_text("flags\t\t: fpu sse2 avx2 avx512f\n")
    assert not ort.int8_exact(info)
    info.write_text("flags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n")
    assert ort.int8_exact(info)
    assert not ort.int8_exact(tmp_path / "missing")


def test_cli_pack_unpack_export_and_int8_onnx(sparse_cls, tmp_path, capsys):
    """pack (with the QAT ranges) -> unpack / export-hf, by the CLI; the int8 ONNX graph from
    the packed file gives the fake-quant logits; fp32 ONNX gives ours for every family."""
    from prune_ofa_jax.runtime import onnx_export, ort  # pylint: disable=import-outside-toplevel
    params, cfg = sparse_cls
    batch = _batch(cfg)
    qcfg = qat.QuantConfig(ema_decay=0.5)
    model_q = bert.BertFamily(cfg, "cls", dense_injector=qat.make_injector(qcfg))
    stats = _qat_stats(model_q, params, batch)
    ckpt = params_ckpt.save_params(tmp_path / "model", params, cfg, "cls")
    qat_ranges.save(ckpt, stats, {"ema_decay": 0.5, "per_channel": False})
    rc, out, err = _cli(capsys, "pack", "--ckpt", ckpt, "--out", tmp_path / "m.pofa", "--int8",
                        "--format", "csr")
    assert rc == 0 and "smaller than fp32" in out, err
    (tmp_path / "bad.pofa").write_bytes((tmp_path / "m.pofa").read_bytes()[:-9])
    for args in (("unpack", "--packed", tmp_path / "m.pofa", "--workdir", tmp_path / "up"),
                 ("export-hf", "--ckpt", tmp_path / "m.pofa", "--workdir", tmp_path / "hf")):
        rc, _, err = _cli(capsys, *args)
        assert rc == 0, err
    rc, _, err = _cli(capsys, "unpack", "--packed", tmp_path / "bad.pofa", "--workdir",
                      tmp_path / "x")
    err = err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "truncated" in err[0], err
    assert not (tmp_path / "x").exists()
    # Meanwhile: the int8 graph of the packed model vs the fake-quant model.
    back, _, _, quant = pack_ckpt.load_packed(tmp_path / "m.pofa")
    fq = np.asarray(model_q.apply({"params": params, "quant_stats": stats}, *batch)["logits"])
    sess = ort.session(onnx_export.export(back, cfg, tmp_path / "q.onnx", int8=True, quant=quant))
    feeds = dict(zip(ort.INPUTS, batch))
    train_helpers.assert_int8_close(ort.logits(sess, feeds), fq)
    assert quant["ranges"].keys() == qat_ranges.ranges_from_stats(stats).keys()
    up = hf.flatten(params_ckpt.load_params(tmp_path / "up")[0])
    for path, w in hf.flatten(back).items():
        np.testing.assert_array_equal(_bits(up[path]), _bits(w))
    assert qat_ranges.load(tmp_path / "up") == quant
    import safetensors.numpy  # pylint: disable=import-outside-toplevel
    sd = safetensors.numpy.load_file(str(tmp_path / "hf" / "model.safetensors"))
    q_kernel = hf.flatten(back)["backbone/encoder/layer_0/ffn/intermediate/kernel"]
    np.testing.assert_array_equal(sd["bert.encoder.layer.0.intermediate.dense.weight"],
                                  q_kernel.T)
    for family in ("distilbert-base-uncased", "roberta-base"):  # fp32 graph, other families
        fcfg = model_config.by_name(family, **train_helpers.TINY, num_labels=3)
        model = bert.BertFamily(fcfg, "cls")
        p = bert.init_params(model, jax.random.key(1))
        b = _batch(fcfg)
        sess = ort.session(onnx_export.export(p, fcfg, tmp_path / f"{family}.onnx"))
        np.testing.assert_allclose(ort.logits(sess, dict(zip(ort.INPUTS, b))),
                                   np.asarray(model.apply({"params": p}, *b)["logits"]),
                                   atol=1e-5)
