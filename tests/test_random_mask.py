"""The random-mask method (sparsity/methods/random_mask.py): exact top-k counts per tensor
and globally, masks set by the seed alone (not by the weights), nested as the sparsity
rises, two seeds overlapping as independent random masks do; frozen weights by default and
its config check; its draw independent of the learned methods' initial scores."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import train_helpers

from prune_ofa_jax import errors
from prune_ofa_jax.sparsity import exact_topk, methods, patterns, schedules
from prune_ofa_jax.sparsity.methods import adaprune, random_mask, supermask

COVERED = {"a": jnp.ones((64, 96), bool), "b": jnp.ones((96, 32), bool), "c": None}


def _method(seed: int, sparsity: float, distribution: str = "uniform"):
    sched = schedules.CubicSchedule(target=sparsity, initial=sparsity, end_step=1,
                                    update_every=1, freeze_step=2)
    return random_mask.RandomMask(schedule=sched, distribution=distribution, seed=seed)


def _params(seed: int):
    rng = np.random.default_rng(seed)
    return {k: None if m is None else jnp.asarray(rng.normal(size=m.shape), jnp.float32)
            for k, m in COVERED.items()}


def test_counts_seed_nesting_and_overlap():
    m50 = _method(3, 0.5).masks(_params(0), None, COVERED, 0)
    assert m50["c"] is None
    for k in ("a", "b"):
        assert int(m50[k].sum()) == exact_topk.host_kept_count(m50[k].size, 0.5), k
    again = _method(3, 0.5).masks(_params(1), None, COVERED, 0)  # other weights, same masks
    for k in ("a", "b"):
        np.testing.assert_array_equal(np.asarray(m50[k]), np.asarray(again[k]))
    m80 = _method(3, 0.8).masks(_params(0), None, COVERED, 0)
    for k in ("a", "b"):  # one draw: what 80 % keeps, 50 % keeps too
        assert not np.any(np.asarray(m80[k]) & ~np.asarray(m50[k])), k
    kept = _method(3, 0.5).masks(_params(0), None, COVERED, 5)  # no update step: unchanged
    assert all(bool(jnp.all(kept[k])) for k in ("a", "b"))
    glob = _method(3, 0.5, "global").masks(_params(0), None, COVERED, 0)
    kept = int(glob["a"].sum() + glob["b"].sum())
    assert kept == exact_topk.host_kept_count(64 * 96 + 96 * 32, 0.5)
    other = _method(4, 0.5).masks(_params(0), None, COVERED, 0)
    a, b = np.asarray(m50["a"]), np.asarray(other["a"])
    jaccard = (a & b).sum() / (a | b).sum()
    assert jaccard == pytest.approx(1 / 3, abs=0.03)  # independent halves: 1/3 expected
    nm = random_mask.RandomMask(schedule=_method(0, 0.5).schedule,
                                pattern=patterns.parse("2:4"), seed=0)
    groups = np.asarray(nm.masks(None, None, COVERED, 0)["a"]).reshape(16, 4, 96).sum(1)
    assert np.all(groups == 2)


def test_config_frozen_default_and_check():
    c = train_helpers.recipe("finetune_glue", "sst2,test")
    c.sparsity.update_from_flattened_dict({"lock_pattern": False, "enabled": True,
                                           "method": "random_mask", "target": 0.5,
                                           "random_mask.seed": 7})
    m = methods.from_config(c, regrow=False)
    assert (type(m), m.seed, m.frozen_weights) == (random_mask.RandomMask, 7, True)
    c.sparsity.frozen_weights = False
    assert not methods.from_config(c, regrow=False).frozen_weights
    c.sparsity.random_mask.seed = -1
    with pytest.raises(errors.ConfigError, match=r"^config\.sparsity\.random_mask\.seed"):
        methods.check(c)
    assert jax.tree.leaves(_method(0, 0.5).scores(COVERED))[0].shape == (64, 96)


def test_initial_draws_independent_across_methods():
    """At one run seed the random mask, AdaPrune's theta0 and supermask's scores rank the
    weights independently (kept halves overlap ~1/3), so no two rows share a mask by
    construction (train/build.py hands both learners the same rng)."""
    rng = jax.random.fold_in(jax.random.key(0), 7)
    ada = adaprune.AdaPrune().init_scores(None, COVERED, rng)["a"]
    sup = supermask.Supermask().init_scores(None, COVERED, rng)["a"]
    rand = _method(0, 0.5).scores(COVERED)["a"]

    def top_half(x):
        x = np.asarray(x).ravel()
        return x > np.median(x)

    for x, y in ((ada, sup), (ada, rand), (sup, rand)):
        a, b = top_half(x), top_half(y)
        assert (a & b).sum() / (a | b).sum() == pytest.approx(1 / 3, abs=0.04)
