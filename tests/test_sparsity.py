"""Sparsity masks: selection rules, exact counts, patterns, optimizer semantics, sharding, Orbax."""

import fractions
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from prune_ofa_jax.sparsity import exact_topk
from prune_ofa_jax.sparsity import masks as masks_lib
from prune_ofa_jax.sparsity import patterns

H, I = 16, 32
TARGETS = (0.5, 0.85, 0.9, 0.97)
_mm = jax.jit(masks_lib.magnitude_masks, static_argnames=("method", "pattern"))


def fake_params(seed=0, layers=2, pooler=True, fill=None):
    """A BERT-named params tree; `fill(rng, shape)` overrides the random normal values."""
    rng = np.random.default_rng(seed)
    fill = fill or (lambda r, s: r.standard_normal(s))
    arr = lambda *s: jnp.asarray(fill(rng, s), jnp.float32)  # noqa: E731
    dense = lambda i, o: {"kernel": arr(i, o), "bias": arr(o)}  # noqa: E731
    ln = lambda: {"scale": arr(H), "bias": arr(H)}  # noqa: E731
    enc = {f"layer_{i}": {
        "attention": {"query": dense(H, H), "key": dense(H, H), "value": dense(H, H),
                      "output": dense(H, H), "layer_norm": ln()},
        "ffn": {"intermediate": dense(H, I), "output": dense(I, H), "layer_norm": ln()},
    } for i in range(layers)}
    backbone = {"embeddings": {"word_embeddings": {"embedding": arr(64, H)},
                               "position_embeddings": {"embedding": arr(8, H)},
                               "layer_norm": ln()},
                "encoder": enc}
    if pooler:
        backbone["pooler"] = {"dense": dense(H, H)}
    return {"backbone": backbone,
            "mlm_head": {"transform": dense(H, H), "layer_norm": ln(), "bias": arr(64)},
            "nsp_head": {"dense": dense(H, 2)}}


def prunable(masks):
    return {p for p, m in masks_lib.named_leaves(masks)}  # None leaves are not leaves


def kept_counts(masks):
    return {p: int(np.sum(m)) for p, m in masks_lib.named_leaves(masks)}


def textbook_kept(n, s):
    return n - math.floor(s * n)


def test_default_regexes_pick_encoder_kernels_and_pooler_only():
    params = fake_params()
    masks = masks_lib.init_masks(params)
    expected = {f"backbone/encoder/layer_{i}/{m}/kernel" for i in range(2) for m in (
        "attention/query", "attention/key", "attention/value", "attention/output",
        "ffn/intermediate", "ffn/output")} | {"backbone/pooler/dense/kernel"}
    assert prunable(masks) == expected
    assert masks["backbone"]["embeddings"]["word_embeddings"]["embedding"] is None
    assert masks["backbone"]["encoder"]["layer_0"]["attention"]["query"]["bias"] is None
    assert masks["mlm_head"]["transform"]["kernel"] is None
    assert all(bool(m.all()) and m.dtype == bool for m in jax.tree.leaves(masks))
    # No pooler (DistilBERT / QA): the default still applies, without the pooler.
    assert len(prunable(masks_lib.init_masks(fake_params(pooler=False)))) == 12


def test_regex_rules_and_errors():
    params = fake_params()
    masks = masks_lib.init_masks(params, exclude=(r"layer_1/", r"pooler"))
    assert len(prunable(masks)) == 6
    with pytest.raises(ValueError, match="no_such_layer"):
        masks_lib.init_masks(params, include=(r"no_such_layer/kernel$",))
    with pytest.raises(ValueError, match="layer_7"):
        masks_lib.init_masks(params, exclude=(r"layer_7/",))
    with pytest.raises(ValueError, match="no prunable"):
        masks_lib.init_masks(params, exclude=(r"kernel$",))


def test_num_pruned_is_exact_floor():
    rng = np.random.default_rng(1)
    ss = np.concatenate([rng.random(300), [0, 1, 0.5, 0.9, 0.97, 1e-12, 1 - 2**-24]])
    ss = ss.astype(np.float32)
    fn = jax.jit(jax.vmap(exact_topk.num_pruned, in_axes=(0, None)), static_argnums=1)
    for n in (1, 10, 1000, 2**24 + 3, 85_000_000, 2**31 - 1):
        got = np.asarray(fn(jnp.asarray(ss), n))
        want = [exact_topk.host_num_pruned(n, s) for s in ss]
        np.testing.assert_array_equal(got, want)
        exact_floor = np.array([int(fractions.Fraction(float(s)) * n) for s in ss])
        assert np.all((got - exact_floor >= 0) & (got - exact_floor <= 1))
    for n in (10, 20, 100, 1000, 4099):  # round decimals give the textbook count
        for s in TARGETS + (0.1, 0.3, 0.7, 0.99):
            assert exact_topk.host_kept_count(n, s) == textbook_kept(n, s), (n, s)


FILLS = {
    "random": None,
    "all_equal": lambda r, s: np.full(s, 0.5),
    "zero_one": lambda r, s: r.integers(0, 2, s),
}


@pytest.mark.parametrize("fill", sorted(FILLS))
def test_exact_counts_uniform_and_global(fill):
    params = fake_params(seed=3, fill=FILLS[fill])
    masks = masks_lib.init_masks(params)
    sizes = {p: w.size for p, w in masks_lib.named_leaves(params) if p in prunable(masks)}
    total = sum(sizes.values())
    for s in (0.0,) + TARGETS:
        uni = _mm(params, masks, jnp.float32(s), method="uniform")
        assert kept_counts(uni) == {p: textbook_kept(n, s) for p, n in sizes.items()}, s
        glob = _mm(params, masks, jnp.float32(s), method="global")
        assert sum(kept_counts(glob).values()) == textbook_kept(total, s), s
        _assert_keeps_largest(params, uni, per_tensor=True)
        _assert_keeps_largest(params, glob, per_tensor=False)


def _assert_keeps_largest(params, masks, per_tensor):
    pairs = [(np.abs(np.asarray(p)), np.asarray(m)) for p, m in zip(
        jax.tree.leaves(masks_lib.mask_like(params, masks)), jax.tree.leaves(masks))]
    groups = [[pm] for pm in pairs] if per_tensor else [pairs]
    for grp in groups:
        kept = np.concatenate([a[m] for a, m in grp])
        dropped = np.concatenate([a[~m] for a, m in grp])
        if kept.size and dropped.size:
            assert kept.min() >= dropped.max()


@pytest.mark.parametrize("n,m", [(2, 4), (1, 8)])
def test_nm_exact_per_group(n, m):
    params = fake_params(seed=4)
    masks = masks_lib.init_masks(params)
    pattern = patterns.NM(n, m)
    new = _mm(params, masks, jnp.float32(pattern.implied_sparsity), pattern=pattern)
    for w, mk in zip(jax.tree.leaves(masks_lib.mask_like(params, new)), jax.tree.leaves(new)):
        w, mk = np.asarray(w), np.asarray(mk)
        groups = mk.reshape(w.shape[0] // m, m, w.shape[1])
        assert np.all(groups.sum(axis=1) == n)
        mags = np.abs(w).reshape(groups.shape)
        kept_min = np.where(groups, mags, np.inf).min(axis=1)
        dropped_max = np.where(groups, -np.inf, mags).max(axis=1)
        assert np.all(kept_min >= dropped_max)
    dense = _mm(params, masks, jnp.float32(0.0), pattern=pattern)  # before the schedule starts
    assert all(bool(x.all()) for x in jax.tree.leaves(dense))
    pattern.check_target(1 - n / m)
    with pytest.raises(ValueError, match="disagrees"):
        pattern.check_target(0.9)


@pytest.mark.parametrize("norm", ["l2", "l1"])
def test_blocks_whole_and_exact(norm):
    params = fake_params(seed=5, fill=FILLS["zero_one"] if norm == "l1" else None)
    masks = masks_lib.init_masks(params)
    pattern = patterns.parse(f"1x4:{norm}")
    for method in ("uniform", "global"):
        new = _mm(params, masks, jnp.float32(0.85), method=method, pattern=pattern)
        counts = []
        for mk in jax.tree.leaves(new):
            blocks = np.asarray(mk).reshape(mk.shape[0] // 4, 4, mk.shape[1])
            assert np.all(blocks.all(axis=1) | ~blocks.any(axis=1))  # whole blocks only
            counts.append((int(blocks[:, 0].sum()), blocks[:, 0].size))
        if method == "uniform":
            assert all(k == textbook_kept(n, 0.85) for k, n in counts)
        else:
            assert sum(k for k, _ in counts) == textbook_kept(sum(n for _, n in counts), 0.85)


def test_bad_patterns_raise_clear_errors():
    params = fake_params()
    masks = masks_lib.init_masks(params)
    with pytest.raises(ValueError, match="N=3 > M=2"):
        patterns.NM(3, 2)
    with pytest.raises(ValueError, match="not divisible by 5"):
        masks_lib.magnitude_masks(params, masks, 0.5, pattern="1x5")
    with pytest.raises(ValueError, match="not divisible by 3"):
        masks_lib.magnitude_masks(params, masks, 0.5, pattern=patterns.NM(2, 3))
    with pytest.raises(ValueError, match="method='uniform'"):
        masks_lib.magnitude_masks(params, masks, 0.5, method="global", pattern="2:4")
    with pytest.raises(ValueError, match="unknown sparsity pattern"):
        patterns.parse("4x4")
    with pytest.raises(ValueError, match="method"):
        masks_lib.magnitude_masks(params, masks, 0.5, method="layerwise")
    with pytest.raises(ValueError, match="sparsity must be in"):
        masks_lib.magnitude_masks(params, masks, 1.5)


def test_pattern_lock_and_stats():
    params = fake_params(seed=6)
    masks = _mm(params, masks_lib.init_masks(params), jnp.float32(0.9))
    hard = masks_lib.apply_masks(params, masks)
    locked = masks_lib.masks_from_nonzero(hard, masks)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool((a == b).all()), locked, masks))
    report = masks_lib.sparsity_report(params, masks)  # dense latent params, masks applied
    sizes = {p: w.size for p, w in masks_lib.named_leaves(hard) if p in prunable(masks)}
    pruned = {p: n - textbook_kept(n, 0.9) for p, n in sizes.items()}
    for p, n in sizes.items():
        assert report[p] == pytest.approx(pruned[p] / n)
    assert report["global"] == pytest.approx(sum(pruned.values()) / sum(sizes.values()))
    enc = sum(w.size for p, w in masks_lib.named_leaves(params) if "encoder/" in p)
    enc_pruned = sum(v for p, v in pruned.items() if "encoder/" in p)
    assert report["encoder_all"] == pytest.approx(enc_pruned / enc)
    assert all(isinstance(v, float) for v in report.values())


def _train(params, masks, hard_zero, steps=3):
    """AdamW with weight decay on a dense quadratic loss, hard-zero or regrow masking."""
    target = jax.tree.map(lambda p: p + 1.0, params)
    opt = optax.adamw(1e-2, weight_decay=0.1)

    def loss(p):
        if not hard_zero:
            p = masks_lib.masked_forward_params(p, masks)
        diffs = jax.tree.map(lambda a, b: jnp.sum((a - b) ** 2), p, target)
        return sum(jax.tree.leaves(diffs))

    @jax.jit
    def step(params, state):
        grads = jax.grad(loss)(params)
        if hard_zero:
            grads = masks_lib.apply_masks(grads, masks)
        updates, state = opt.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        if hard_zero:
            params = masks_lib.apply_masks(params, masks)
        return params, state

    state, history = opt.init(params), []
    for _ in range(steps):
        params, state = step(params, state)
        history.append(params)
    return history


def _at(tree, masks, keep):
    """Concatenated prunable entries where mask == keep."""
    return np.concatenate([np.asarray(p)[np.asarray(m) == keep] for p, m in zip(
        jax.tree.leaves(masks_lib.mask_like(tree, masks)), jax.tree.leaves(masks))])


def test_hard_zero_survives_adamw_with_weight_decay_and_masks_are_monotone():
    dense = fake_params(seed=7)
    masks = _mm(dense, masks_lib.init_masks(dense), jnp.float32(0.5))
    params = masks_lib.apply_masks(dense, masks)
    for p in _train(params, masks, hard_zero=True):
        assert np.all(_at(p, masks, False) == 0.0)
    assert np.all(_at(p, masks, True) != _at(params, masks, True))  # the rest trained
    higher = _mm(p, masks, jnp.float32(0.7))
    grown = [bool((n & ~o).any()) for n, o in zip(jax.tree.leaves(higher), jax.tree.leaves(masks))]
    assert not any(grown)
    # Control: the same optimizer without masking grads/params revives pruned weights.
    unmasked = _train(params, masks_lib.init_masks(params), hard_zero=True)[-1]
    assert np.all(_at(unmasked, masks, False) != 0.0)


def test_regrow_latent_moves_only_by_decay_forward_is_zero():
    params = fake_params(seed=8)
    masks = _mm(params, masks_lib.init_masks(params), jnp.float32(0.5))
    history = _train(params, masks, hard_zero=False)
    decay = (1 - 1e-2 * 0.1) ** np.arange(1, 4)
    for p, d in zip(history, decay):
        np.testing.assert_allclose(_at(p, masks, False), _at(params, masks, False) * d, rtol=1e-5)
        assert np.all(_at(masks_lib.masked_forward_params(p, masks), masks, False) == 0.0)
    # Regrowth: once the kept latent weights vanish, a mask update revives the pruned ones.
    shrunk = jax.tree.map(lambda w, m: w if m is None else jnp.where(m, 0.0, w),
                          history[-1], masks)
    revived = _mm(shrunk, masks, jnp.float32(0.5))
    flipped = [bool((r == ~m).all())
               for r, m in zip(jax.tree.leaves(revived), jax.tree.leaves(masks))]
    assert all(flipped)


def test_orbax_round_trip_keeps_none_leaves(tmp_path):
    params = fake_params(seed=9)
    masks = _mm(params, masks_lib.init_masks(params), jnp.float32(0.85))
    ckpt = ocp.StandardCheckpointer()
    ckpt.save(tmp_path / "masks", masks)
    ckpt.wait_until_finished()
    abstract = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=m.sharding), masks)
    restored = ckpt.restore(tmp_path / "masks", abstract)
    assert jax.tree.structure(restored) == jax.tree.structure(masks)
    assert restored["backbone"]["encoder"]["layer_0"]["attention"]["query"]["bias"] is None
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(masks)):
        assert a.dtype == bool and bool((a == b).all())


def test_masks_shard_like_params():
    mesh = jax.make_mesh((8,), ("model",), axis_types=(jax.sharding.AxisType.Auto,))
    params = fake_params(seed=10)
    masks = masks_lib.init_masks(params)
    spec = lambda path, x: (jax.sharding.PartitionSpec("model", None)  # noqa: E731
                            if path[-1].key == "kernel" else jax.sharding.PartitionSpec())
    specs = jax.tree_util.tree_map_with_path(spec, params)
    p_sh = jax.tree.map(lambda s: jax.sharding.NamedSharding(mesh, s), specs)
    m_sh = masks_lib.mask_like(p_sh, masks)
    assert m_sh["backbone"]["encoder"]["layer_0"]["attention"]["query"]["bias"] is None
    params = jax.jit(lambda t: t, out_shardings=p_sh)(params)
    masks = jax.jit(lambda t: t, out_shardings=m_sh)(masks)
    new_masks = jax.jit(lambda p, m: masks_lib.magnitude_masks(p, m, jnp.float32(0.9), "global"),
                        in_shardings=(p_sh, m_sh), out_shardings=m_sh)(params, masks)
    masked = jax.jit(masks_lib.apply_masks, in_shardings=(p_sh, m_sh),
                     out_shardings=p_sh)(params, new_masks)
    for got, want in zip(jax.tree.leaves(masked), jax.tree.leaves(p_sh)):
        assert got.sharding == want
    for got, want in zip(jax.tree.leaves(new_masks), jax.tree.leaves(m_sh)):
        assert got.sharding == want
    local = _mm(jax.device_get(params), masks_lib.init_masks(params), jnp.float32(0.9),
                method="global")
    for a, b in zip(jax.tree.leaves(new_masks), jax.tree.leaves(local)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
