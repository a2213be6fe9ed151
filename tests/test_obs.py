"""OBS / oBERT pruning (sparsity/obs.py) against a dense numpy computation of the OBS
formulas, on a quadratic toy with a known optimum, and sharded over 8 devices."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prune_ofa_jax.parallel import mesh as mesh_lib
from prune_ofa_jax.sparsity import exact_topk
from prune_ofa_jax.sparsity import obs, obs_block

B = 8
DAMP = 0.05
SHAPES = {"a": (10, 3), "b": (6, 8)}  # 30 weights (tail block 6 of 8 valid), 48 (6 blocks)
_select = jax.jit(obs.select, static_argnames="distribution")


def _tree(shapes, rng):
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}


def _fisher(grads_list, masks, mesh=None):
    fisher = obs.init(masks, B, mesh=mesh)
    stacked = jax.tree.map(lambda *g: np.stack(g), *grads_list)
    return jax.jit(functools.partial(obs.accumulate, stacked=True, mesh=mesh))(fisher, stacked)


def _np_reference(w, grads, alive, pruned, damp):
    """Dense OBS per block in float64 on the kernel's [out, in] row-major view: saliency
    (-inf off the alive set) and the weights after the exact set update, kernel-shaped."""
    flat = lambda x: np.asarray(x, np.float64).T.reshape(-1)  # noqa: E731
    unflat = lambda x: x.reshape(np.shape(w)[::-1]).T  # noqa: E731
    wf, alive, pruned = flat(w), flat(alive).astype(bool), flat(pruned).astype(bool)
    g = np.stack([flat(x) for x in grads])
    sal, new = np.full(wf.size, -np.inf), np.zeros(wf.size)
    for start in range(0, wf.size, B):
        idx = np.arange(start, min(start + B, wf.size))
        idx = idx[alive[idx]]
        if not idx.size:
            continue
        f = g[:, idx].T @ g[:, idx] / len(grads)
        f += damp * max(np.mean(np.diag(f)), obs_block.CURVATURE_FLOOR) * np.eye(idx.size)
        f_inv = np.linalg.inv(f)
        sal[idx] = wf[idx] ** 2 / (2 * np.diag(f_inv))
        q = pruned[idx]
        delta = -f_inv[:, q] @ np.linalg.solve(f_inv[np.ix_(q, q)], wf[idx][q])
        new[idx] = np.where(q, 0.0, wf[idx] + delta)
    return unflat(sal), unflat(new)


def test_layout_roundtrip_padding_and_bytes():
    k = jnp.arange(30, dtype=jnp.float32).reshape(10, 3)
    n = obs.num_blocks(k.shape, B)
    blocks = obs.to_blocks(k, n, B)
    assert blocks.shape == (4, B)
    # a block holds consecutive inputs of one output neuron: column 0 first
    np.testing.assert_array_equal(blocks[0], k[:8, 0])
    np.testing.assert_array_equal(blocks[-1, 6:], 0.0)
    np.testing.assert_array_equal(obs.valid(k.shape, n, B).sum(), 30)
    np.testing.assert_array_equal(obs.from_blocks(blocks, k.shape), k)
    assert obs.num_blocks((10, 3), B, num_shards=8) == 8
    masks = {"a": np.ones(SHAPES["a"], bool), "b": np.ones(SHAPES["b"], bool), "c": None}
    fisher = obs.init(masks, B)
    built = sum(x.nbytes for x in jax.tree.leaves(fisher.sums))
    assert obs.fisher_bytes(masks, B) == {"total": built, "per_device": built, "blocks": 10}
    assert obs.fisher_bytes({"a": (10, 3)}, B, num_shards=8)["per_device"] == B * B * 4
    assert obs.recompute_schedule(0.5, 0.9, 4) == pytest.approx([0.6, 0.7, 0.8, 0.9])
    assert obs.recompute_schedule(0.3, 0.9, 3)[-1] == 0.9
    np.testing.assert_allclose(obs.recompute_sparsity(0.5, 0.9, jnp.int32(2), 4), 0.7)


def test_saliency_and_group_update_match_dense_numpy():
    rng = np.random.default_rng(0)
    w = _tree(SHAPES, rng)
    grads = [_tree(SHAPES, rng) for _ in range(3)]  # 3 < B: a rank-deficient Fisher
    # some weights already pruned (exactly zero), then about 3 of 8 more per block
    old = {k: rng.random(s) > 0.2 for k, s in SHAPES.items()}
    w = {k: np.where(old[k], v, 0.0).astype(np.float32) for k, v in w.items()}
    new = {k: old[k] & (rng.random(s) > 0.4) for k, s in SHAPES.items()}
    fisher = _fisher(grads, old)
    for k, sums in fisher.sums.items():  # the running sum of g g^T per block
        blocks = [np.asarray(obs.to_blocks(jnp.asarray(g[k]), sums.shape[0], B)) for g in grads]
        np.testing.assert_allclose(sums, sum(np.einsum("ni,nj->nij", x, x) for x in blocks),
                                   rtol=1e-5, atol=1e-6)
    assert int(fisher.count) == 3
    sal = jax.jit(obs.saliency)(w, fisher, old, DAMP)
    upd = jax.jit(obs.update)(w, fisher, old, new, DAMP)
    for k in SHAPES:
        ref_sal, ref_new = _np_reference(w[k], [g[k] for g in grads], old[k],
                                         old[k] & ~new[k], DAMP)
        assert np.all(np.isneginf(sal[k]) == ~old[k])
        np.testing.assert_allclose(np.where(old[k], sal[k], 0), np.where(old[k], ref_sal, 0),
                                   rtol=2e-3)
        np.testing.assert_allclose(upd[k], ref_new, rtol=2e-3, atol=2e-4)
        assert np.all(np.asarray(upd[k])[~new[k]] == 0.0)  # exact zeros, old and new
        assert not np.allclose(upd[k][new[k]], w[k][new[k]])  # kept weights were corrected


def test_block_update_keeps_padding_zero_and_small_damp_stays_finite():
    rng = np.random.default_rng(1)
    n = obs.num_blocks(SHAPES["a"], B)
    w = obs.to_blocks(jnp.asarray(rng.standard_normal(SHAPES["a"]), jnp.float32), n, B)
    # 2 gradients (rank 2 of 8) whose per-weight scales span five decades
    g = jnp.asarray(rng.standard_normal((n, 2, B)) * np.exp(rng.uniform(-6, 6, (n, 1, B))),
                    jnp.float32) * obs.valid(SHAPES["a"], n, B)[:, None]
    sums = jnp.einsum("nki,nkj->nij", g, g)
    alive = jnp.asarray(obs.valid(SHAPES["a"], n, B))
    pruned = alive & jnp.asarray(rng.random((n, B)) > 0.5)
    for damp in (DAMP, obs_block.MIN_DAMP):
        out = jax.jit(obs_block.block_update)(sums, w, alive, pruned, 2, damp)
        np.testing.assert_array_equal(out[~obs.valid(SHAPES["a"], n, B)], 0.0)
        np.testing.assert_array_equal(out[np.asarray(pruned)], 0.0)
        assert np.all(np.isfinite(out))
        rho = jax.jit(obs_block.block_saliency)(sums, w, alive, 2, damp)
        assert np.all(np.isfinite(rho[alive])) and np.all(np.isneginf(rho[~alive]))
    with pytest.raises(ValueError, match="damp"):
        obs.saliency({"a": w}, obs.init({"a": (10, 3)}, B), {"a": np.ones((10, 3), bool)}, 1e-7)


def _quadratic_toy(seed=0, m=64):
    """w* and gradients with per-weight scales over two decades (so |w| is a poor guide)
    and correlated entries; the loss's H is their block-diagonal empirical Fisher plus the
    damp, the model OBS works with, and w* its optimum (zero gradient, as after training)."""
    rng = np.random.default_rng(seed)
    w_star = {"a": rng.standard_normal(SHAPES["a"]).astype(np.float32)}
    scale = np.exp(rng.uniform(np.log(0.1), np.log(10), SHAPES["a"]))
    mix = rng.standard_normal((30, 30)) * 0.3 + np.eye(30)
    grads = [{"a": (scale * (mix @ rng.standard_normal(30)).reshape(3, 10).T)
              .astype(np.float32)} for _ in range(m)]
    return w_star, grads


def _toy_loss(w, w_star, grads):
    dw = (np.asarray(w["a"], np.float64) - w_star["a"]).T.reshape(-1)
    g = np.stack([x["a"].T.reshape(-1) for x in grads]).astype(np.float64)
    loss = 0.0
    for start in range(0, dw.size, B):
        sl = slice(start, start + B)
        h = g[:, sl].T @ g[:, sl] / len(grads)
        h += DAMP * np.mean(np.diag(h)) * np.eye(h.shape[0])
        loss += 0.5 * dw[sl] @ h @ dw[sl]
    return loss


def test_quadratic_toy_obs_beats_magnitude():
    prune, update = jax.jit(obs.prune), jax.jit(obs.update)
    masks = {"a": np.ones(SHAPES["a"], bool)}
    for seed in (0, 1):
        w_star, grads = _quadratic_toy(seed)
        fisher = _fisher(grads, masks)
        for sparsity in (0.3, 0.5, 0.8):
            w_obs, m_obs = prune(w_star, fisher, masks, sparsity, DAMP)
            magnitude = _select({"a": jnp.abs(w_star["a"])}, masks, sparsity)
            w_mag = {"a": np.where(magnitude["a"], w_star["a"], 0.0)}
            w_mag_upd = update(w_star, fisher, masks, magnitude, DAMP)
            assert int(np.sum(~m_obs["a"])) == int(np.sum(~magnitude["a"]))
            l_obs = _toy_loss(w_obs, w_star, grads)
            l_mag_upd = _toy_loss(w_mag_upd, w_star, grads)
            l_mag = _toy_loss(w_mag, w_star, grads)
            # the update is optimal for its set under H, so it helps any selection
            assert l_obs < l_mag_upd < l_mag, (seed, sparsity, l_obs, l_mag_upd, l_mag)


def test_select_exact_counts_uniform_and_global():
    rng = np.random.default_rng(2)
    scores = {k: jnp.asarray(rng.random(s), jnp.float32) for k, s in SHAPES.items()}
    masks = {k: np.ones(s, bool) for k, s in SHAPES.items()}
    masks["c"], scores["c"] = None, None
    for s in (0.3, 0.9):
        uni = _select(scores, masks, s, "uniform")
        for k, shape in SHAPES.items():
            n = int(np.prod(shape))
            assert int(np.sum(uni[k])) == exact_topk.host_kept_count(n, s)
        glob = _select(scores, masks, s, "global")
        assert glob["c"] is None
        assert sum(int(np.sum(glob[k])) for k in SHAPES) == exact_topk.host_kept_count(78, s)
        cut = min(float(np.min(np.asarray(scores[k])[glob[k]])) for k in SHAPES)
        assert all(np.all(np.asarray(scores[k])[~glob[k]] <= cut) for k in SHAPES)
    with pytest.raises(ValueError, match="distribution"):
        obs.select(scores, masks, 0.5, "layerwise")


def test_masks_monotone_over_two_prunes():
    rng = np.random.default_rng(3)
    w = _tree(SHAPES, rng)
    masks = {k: np.ones(s, bool) for k, s in SHAPES.items()}
    prune = jax.jit(obs.prune, static_argnames="distribution")
    w1, m1 = prune(w, _fisher([_tree(SHAPES, rng) for _ in range(3)], masks), masks, 0.4,
                   DAMP, "global")
    w2, m2 = prune(w1, _fisher([_tree(SHAPES, rng) for _ in range(3)], m1), m1, 0.7, DAMP,
                   "global")
    w3, m3 = prune(w2, _fisher([_tree(SHAPES, rng) for _ in range(3)], m2), m2, 0.5, DAMP,
                   "global")
    for k in SHAPES:
        assert not np.any(m2[k] & ~m1[k]) and np.all(np.asarray(w2[k])[~m2[k]] == 0.0)
        np.testing.assert_array_equal(m3[k], m2[k])  # a lower target un-prunes nothing
        np.testing.assert_array_equal(w3[k], w2[k])
    assert sum(int(np.sum(m2[k])) for k in SHAPES) == exact_topk.host_kept_count(78, 0.7)


def test_sharded_fisher_matches_single_device():
    rng = np.random.default_rng(4)
    shapes = {"a": (12, 6), "b": (16, 8)}  # 9 (padded to 16) and 16 blocks of 8
    w = _tree(shapes, rng)
    grads = [_tree(shapes, rng) for _ in range(3)]
    masks = {k: np.ones(s, bool) for k, s in shapes.items()}
    mesh = mesh_lib.make_mesh(data=2, fsdp=4)
    fsdp = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("fsdp", None))
    prune = functools.partial(obs.prune, distribution="global")
    with jax.set_mesh(mesh):
        fisher = _fisher(grads, masks, mesh)
        w_fsdp = {k: jax.device_put(v, fsdp) for k, v in w.items()}  # kernels as trained
        w_s, m_s = jax.jit(functools.partial(prune, mesh=mesh))(w_fsdp, fisher, masks, 0.6,
                                                                DAMP)
    for leaf in jax.tree.leaves(fisher.sums):
        shard_blocks = {s.data.shape[0] for s in leaf.addressable_shards}
        assert shard_blocks == {leaf.shape[0] // 8}, shard_blocks  # no device holds all
    per_device = sum(s.data.nbytes for leaf in jax.tree.leaves(fisher.sums)
                     for s in leaf.addressable_shards if s.device == jax.devices()[0])
    assert obs.fisher_bytes(masks, B, num_shards=8)["per_device"] == per_device
    w_1, m_1 = jax.jit(prune)(w, _fisher(grads, masks), masks, 0.6, DAMP)
    for k in shapes:
        np.testing.assert_array_equal(m_s[k], m_1[k])
        np.testing.assert_allclose(w_s[k], w_1[k], rtol=1e-5, atol=1e-6)
