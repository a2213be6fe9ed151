"""AutoTinyBERT (prune_ofa_jax/nas): the per-step sampler is a pure function of the step
(the same in another process), mutation never leaves the space, the latency predictor
learns a cost model to within 10 %, the search stays in its latency window, and a sub-model
cut from the supernet equals the standalone model of its shape (Flax and, after extraction,
Hugging Face PyTorch)."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from prune_ofa_jax.nas import defaults as nas_config
from prune_ofa_jax.nas import evolution
from prune_ofa_jax.nas import space as space_lib

SPACE = space_lib.Space.from_config(nas_config.defaults().space)


def test_sampler_is_a_pure_function_of_the_step_in_every_process():
    keys = [space_lib.sample_for_step(SPACE, 7, s).key() for s in range(300)]
    assert keys == [space_lib.sample_for_step(SPACE, 7, s).key() for s in range(300)]
    assert all(SPACE.contains(space_lib.sample_for_step(SPACE, 7, s)) for s in range(300))
    assert len(set(keys)) > 200  # really random, not a constant
    assert keys != [space_lib.sample_for_step(SPACE, 8, s).key() for s in range(300)]
    code = ("from prune_ofa_jax.nas import defaults as config, space as S; "
            "sp = S.Space.from_config(config.defaults().space); "
            "print(' '.join(S.sample_for_step(sp, 7, s).key() for s in range(300)))")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True).stdout.split()
    assert other == keys
    # Each arch runs in a bucket that holds it; the buckets are the compiled shapes.
    buckets = space_lib.Buckets.from_config(nas_config.defaults().buckets, SPACE)
    shapes = buckets.all(SPACE)
    assert len(shapes) == 6  # 2 x 2 x 2 widths, minus the two with qkv bucket > hidden's
    for a in SPACE.all():
        b = buckets.of(a)
        assert b in shapes and b.layers == SPACE.top().layers
        assert b.hidden >= a.hidden and b.ffn >= a.ffn and b.qkv >= a.qkv


def test_mutation_never_leaves_the_space():
    rng = np.random.default_rng(0)
    grid = SPACE.all()
    edges = [space_lib.Arch(l, h, f, q) for l in SPACE.layers[::5] for h in SPACE.hidden[::6]
             for f in SPACE.ffn[::15] for q in SPACE.qkv_for(h)[::6]]
    moved = 0
    for prob in (0.25, 0.5):   # 0.5: hidden and FFN move on every draw
        for a in edges + [grid[i] for i in rng.integers(0, len(grid), 300)]:
            for _ in range(5):
                b = SPACE.mutate(a, rng, prob)
                assert SPACE.contains(b), (a, b)
                assert abs(SPACE.layers.index(b.layers) - SPACE.layers.index(a.layers)) <= 1
                assert abs(SPACE.hidden.index(b.hidden) - SPACE.hidden.index(a.hidden)) <= 1
                assert abs(SPACE.ffn.index(b.ffn) - SPACE.ffn.index(a.ffn)) <= 2
                moved += b != a
    assert moved > 1000
    with pytest.raises(ValueError, match="config.nas.space.qkv"):
        c = nas_config.defaults().space
        c.qkv = (90, 390, 60)
        space_lib.Space.from_config(c)


def _fake_ms(archs):
    """A made-up latency model (ms) standing in for the predictor."""
    return np.array([0.2 + a.layers * (a.hidden * (a.ffn + 2 * a.qkv) / 1.5e5) for a in archs])


def test_search_stays_in_the_latency_window_and_resumes_from_its_cache():
    s_cfg = nas_config.defaults().search
    s_cfg.budget, s_cfg.generation, s_cfg.parents = 30, 10, 10
    teacher = float(_fake_ms([SPACE.top()])[0])
    window = evolution.Window.for_speedup(teacher, 4.0, s_cfg.window)
    pool = evolution.candidates(SPACE, _fake_ms, window)
    assert 50 < len(pool) < len(SPACE.all())
    calls = []

    def fitness(a):  # deeper and wider is "better", plus a deterministic jitter
        calls.append(a)
        return {"fitness": a.layers + a.hidden / 384 + (hash(a.key()) % 7) / 70}

    predict = lambda a: float(_fake_ms([a])[0])
    cache = {}
    res = evolution.evolve(SPACE, pool, predict, window, fitness, s_cfg, 0, cache,
                        say=lambda m: None)
    archs = [a for a, _ in res["evaluated"]]
    assert len(archs) == 30 == len(set(archs)) == len(calls)
    assert res["generations"] == 3
    for a in archs:
        assert SPACE.contains(a) and window.lo <= predict(a) <= window.hi
        assert window.lo >= 0.85 * teacher / 4 - 1e-9 and window.hi <= 1.1 * teacher / 4 + 1e-9
    assert res["best"] == max(archs, key=lambda a: cache[a]["fitness"])
    # later generations hold mutations: archs one grid step from an earlier one
    near = lambda a, b: sum(x != y for x, y in zip(a.to_dict().values(),
                                                   b.to_dict().values())) <= 2
    assert any(near(a, b) for a in archs[10:] for b in archs[:10])
    again = evolution.evolve(SPACE, pool, predict, window, fitness, s_cfg, 0, cache,
                          say=lambda m: None)
    assert [a for a, _ in again["evaluated"]] == archs and len(calls) == 30  # all cached


def test_latency_predictor_fits_a_cost_model_within_ten_percent_and_round_trips(tmp_path):
    from prune_ofa_jax.nas import predictor
    rng = np.random.default_rng(0)
    archs = sorted({SPACE.sample(rng) for _ in range(60)})
    feats = np.stack([a.features() for a in archs])
    noise = 1 + 0.03 * rng.standard_normal((len(archs), 2))  # the real table's ~3 % jitter
    ms = np.stack([_fake_ms(archs), 30 * _fake_ms(archs) + 5], 1) * noise
    p_cfg = nas_config.defaults().predictor
    pred, rep = predictor.fit(archs, feats, ms, SPACE, (1, 32), p_cfg, 0.25, seed=0)
    assert rep["n_heldout"] == 15 and rep["n_train"] == len(archs) - 15
    assert max(rep["heldout_mean_relative_error"].values()) < 0.10, rep
    assert pred.weights[0][0].shape[0] == p_cfg.members  # an ensemble, one axis
    pred.save(tmp_path / "p.json")
    again = predictor.Predictor.load(tmp_path / "p.json")
    np.testing.assert_allclose(again.predict(archs[:7]), pred.predict(archs[:7]), rtol=1e-6)
    assert again.predict_one(archs[3], 32) == pytest.approx(pred.predict([archs[3]])[0, 1])
    # a file written before the ensemble (one MLP, no member axis) loads as one member
    single = predictor.train(feats, ms, SPACE.top().features(), (1, 32), 8, 1, 50, 3e-3)
    single.save(tmp_path / "old.json")
    d = json.loads((tmp_path / "old.json").read_text())
    d["weights"] = [[w[0], b[0]] for w, b in d["weights"]]
    (tmp_path / "old.json").write_text(json.dumps(d))
    np.testing.assert_allclose(predictor.Predictor.load(tmp_path / "old.json").predict(archs),
                               single.predict(archs), rtol=1e-5)


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory):
    """A seeded random BertFamily "base" tree: 2 layers, 48 hidden, 12 heads of 4 dims."""
    from prune_ofa_jax.models import bert
    from prune_ofa_jax.models import config as mcfg
    cfg = mcfg.by_name("bert-base-uncased", num_layers=2, hidden_size=48, intermediate_size=64,
                       max_position_embeddings=64)
    params = bert.init_params(bert.BertFamily(cfg, "base"), jax.random.key(3))
    # LayerNorm scales and biases away from 1 / 0, so slicing them is really tested.
    params = jax.tree_util.tree_map_with_path(
        lambda p, x: x + 0.1 * jax.random.normal(jax.random.key(len(str(p))), x.shape)
        if "layer_norm" in str(p) else x, params)
    return params, cfg


def test_extracted_submodel_equals_supernet_and_standalone(tiny_teacher, tmp_path):
    import torch
    import transformers

    from prune_ofa_jax.convert import params_ckpt
    from prune_ofa_jax.models import bert
    from prune_ofa_jax.nas import elastic, extract, rewire
    params, cfg = tiny_teacher
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 5000, (2, 12)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 8:] = 0
    top = space_lib.Arch(2, 48, 64, 48)
    full = elastic.slice_params(params, top)
    # (layers, hidden, ffn, qkv): qkv = hidden; 12 HF heads padded inside; 16 HF heads + 4 zero
    for arch in (space_lib.Arch(1, 24, 32, 24), space_lib.Arch(2, 48, 32, 24),
                 space_lib.Arch(1, 32, 40, 24)):
        sub = elastic.slice_params(params, arch)
        exact = elastic.forward(sub, ids, mask, cfg=cfg)
        # the supernet's view: the arch masked inside the full-size bucket
        masked = elastic.forward(full, ids, mask, cfg=cfg, active=elastic.active_array(arch))
        d = arch.hidden
        np.testing.assert_allclose(masked["last_hidden_state"][..., :d],
                                   exact["last_hidden_state"], atol=2e-5)
        np.testing.assert_array_equal(masked["last_hidden_state"][..., d:], 0.0)
        np.testing.assert_allclose(masked["scores"], exact["scores"], atol=2e-5)
        # the standalone Flax model (BertFamily) of the sub-architecture's shape
        padded, scfg = extract.submodel(params, cfg, arch)
        ref = bert.BertFamily(scfg, "base").apply({"params": padded}, ids, mask)
        np.testing.assert_allclose(ref["last_hidden_state"], exact["last_hidden_state"],
                                   atol=1e-5)
        np.testing.assert_allclose(ref["pooler_output"], exact["pooled"], atol=1e-5)
        # the plain HF BERT written by `extract`, reloaded with transformers
        out = extract.extract(params, cfg, arch, tmp_path / arch.key())
        assert json.loads((out / "autotinybert.json").read_text())["arch"] == arch.to_dict()
        hf = transformers.BertModel.from_pretrained(out).eval()
        with torch.no_grad():
            o = hf(input_ids=torch.tensor(ids, dtype=torch.long),
                   attention_mask=torch.tensor(mask))
        np.testing.assert_allclose(o.last_hidden_state.numpy(), exact["last_hidden_state"],
                                   atol=1e-5)
        np.testing.assert_allclose(o.pooler_output.numpy(), exact["pooled"], atol=1e-5)
    assert hf.config.num_attention_heads == 16  # the last arch needed zero heads
    # The CLI: one from a params checkpoint; bad input is one error line and exit status 2.
    params_ckpt.save_params(tmp_path / "supernet", params, cfg, "base")
    arch = '{"layers":1,"hidden":24,"ffn":32,"qkv":24}'
    assert extract.main(["--supernet", str(tmp_path / "supernet"), "--arch", arch,
                         "--workdir", str(tmp_path / "cli")]) == 0
    assert (tmp_path / "cli" / "model.safetensors").exists()
    for bad in ('{"layers":3,"hidden":24,"ffn":32,"qkv":24}',   # deeper than the supernet
                '{"layers":1,"hidden":24,"ffn":32,"qkv":36}',   # qkv > hidden
                '{"layers":1,"hidden":24,"ffn":32}'):
        assert extract.main(["--supernet", str(tmp_path / "supernet"), "--arch", bad,
                             "--workdir", str(tmp_path / "bad")]) == 2
        assert not (tmp_path / "bad").exists()
    # Rewiring (sorting units before the supernet starts) preserves the function.
    rewired, perm = rewire.rewire(jax.device_get(params), cfg.num_heads)
    a, b = (elastic.forward(p, ids, mask, cfg=cfg) for p in (params, rewired))
    np.testing.assert_allclose(b["last_hidden_state"], a["last_hidden_state"][..., perm],
                               atol=1e-5)
    np.testing.assert_allclose(b["scores"], a["scores"], atol=1e-5)
    np.testing.assert_allclose(b["pooled"], a["pooled"][..., perm], atol=1e-5)
    assert not np.array_equal(perm, np.arange(perm.size))
