"""MI bounds (distill/mi.py): MI-alpha against a direct computation, its special cases
(alpha = 1: InfoNCE, alpha = 0: TUBA), numerical stability, and valid lower bounds on
correlated Gaussians with known MI, with the analytic critic and with a trained Flax critic."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.special import logsumexp

from prune_ofa_jax.distill import mi


def _direct_mi_alpha(scores, log_b, alpha):
    """Poole et al.'s estimator written out with plain exponentials (float64, small K)."""
    k = scores.shape[0]
    e, q = np.exp(scores), np.exp(log_b)
    m = lambda i, j: np.mean([e[i, c] for c in range(k) if c != j])  # leave column j out
    joint, marginal = [], []
    for i, j in itertools.permutations(range(k), 2):
        joint.append(np.log(e[i, i] / (alpha * m(i, j) + (1 - alpha) * q[i])))
        marginal.append(e[i, j] / (alpha * m(i, i) + (1 - alpha) * q[i]))
    return 1 + np.mean(joint) - np.mean(marginal)


def _random_critic_scores(k=7, seed=0):
    rng = np.random.default_rng(seed)
    h_s = jnp.asarray(rng.normal(size=(k, 5, 12)), jnp.float32)
    h_t = jnp.asarray(rng.normal(size=(k, 5, 16)), jnp.float32)
    mask = jnp.asarray(np.arange(5)[None] < rng.integers(2, 6, (k, 1)), jnp.int32)
    critic = mi.Critic(hidden=32, out=8, kind="encoder")
    params = jax.jit(critic.init)(jax.random.key(seed), h_s, h_t, mask)["params"]
    return jax.jit(critic.apply)({"params": params}, h_s, h_t, mask)


def test_mi_alpha_equals_direct_computation_and_special_cases():
    scores, log_b = _random_critic_scores()
    s64, b64 = np.asarray(scores, np.float64), np.asarray(log_b, np.float64)
    k = s64.shape[0]
    for alpha in (0.0, 0.3, 0.9, 1.0):
        got = float(mi.interpolated_bound(scores, log_b, alpha))
        assert got == pytest.approx(_direct_mi_alpha(s64, b64, alpha), abs=2e-5), alpha
    # alpha = 1 is InfoNCE on K-1 samples: exactly the mean, over the left-out sample j, of
    # InfoNCE on the scores without row and column j.
    sub = lambda j: jnp.asarray(np.delete(np.delete(s64, j, 0), j, 1), jnp.float32)
    loo_nce = np.mean([float(mi.infonce_bound(sub(j))) for j in range(k)])
    assert float(mi.interpolated_bound(scores, log_b, 1.0)) == pytest.approx(loo_nce, abs=2e-5)
    # alpha = 0: TUBA with the same baseline; NWJ = TUBA with log q = 1.
    assert float(mi.interpolated_bound(scores, log_b, 0.0)) == pytest.approx(
        float(mi.tuba_bound(scores, log_b)), abs=1e-6)
    assert float(mi.nwj_bound(scores)) == pytest.approx(
        float(mi.tuba_bound(scores, jnp.ones(k))), abs=1e-6)


def test_log_space_is_stable_where_exponentials_overflow():
    scores, log_b = _random_critic_scores(k=6, seed=3)
    big = np.asarray(scores, np.float64) * 400.0        # e^f overflows float32 (and float64)
    with np.errstate(over="ignore", invalid="ignore"):
        assert not np.isfinite(_direct_mi_alpha(big, np.asarray(log_b, np.float64) * 400, 0.9))
    k = big.shape[0]
    ref_loo = np.array([[logsumexp(np.delete(big[i], j)) - np.log(k - 1) for j in range(k)]
                        for i in range(k)])
    got_loo = np.asarray(mi.log_loo_mean(jnp.asarray(big, jnp.float32)))
    np.testing.assert_allclose(got_loo, ref_loo, rtol=1e-6, atol=1e-3)
    value, grads = jax.value_and_grad(mi.interpolated_bound, argnums=(0, 1))(
        jnp.asarray(big, jnp.float32), jnp.asarray(log_b) * 400, 0.9)
    assert np.isfinite(float(value))
    assert all(np.isfinite(np.asarray(g)).all() for g in grads)


def _gaussians(rho, n, dim, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim))
    y = rho * x + np.sqrt(1 - rho**2) * rng.normal(size=(n, dim))
    return x.astype(np.float32), y.astype(np.float32)


def _true_mi(rho, dim):
    return -0.5 * dim * np.log(1 - rho**2)


def _optimal_scores(x, y, rho):
    """f*(x_j, y_i) = log p(y_i | x_j) - log p(y_i): rows y (the "teacher"), columns x."""
    diff = y[:, None, :] - rho * x[None, :, :]
    return (np.sum(-diff**2 / (2 * (1 - rho**2)) + y[:, None, :]**2 / 2, -1)
            - 0.5 * x.shape[1] * np.log(1 - rho**2))


RHOS = (0.2, 0.5, 0.8)


def test_bounds_are_valid_and_increase_on_correlated_gaussians():
    """With the analytic critic (the log density ratio) every bound stays <= the true MI
    (averaged over batches) and grows with the correlation; InfoNCE also <= log K."""
    dim, k, batches = 2, 128, 16
    est = {kind: [] for kind in ("mi_alpha", "infonce", "nwj", "tuba")}
    for rho in RHOS:
        vals = {kind: [] for kind in est}
        for b in range(batches):
            x, y = _gaussians(rho, k, dim, seed=100 * b + int(rho * 10))
            s = jnp.asarray(_optimal_scores(x, y, rho), jnp.float32)
            zeros = jnp.zeros((k,), jnp.float32)
            vals["mi_alpha"].append(float(mi.interpolated_bound(s, zeros, 0.9)))
            vals["infonce"].append(float(mi.infonce_bound(s)))
            vals["nwj"].append(float(mi.nwj_bound(s + 1.0)))   # NWJ's optimum is f* + 1
            vals["tuba"].append(float(mi.tuba_bound(s, zeros)))
        for kind, v in vals.items():
            est[kind].append(np.mean(v))
            stderr = np.std(v) / np.sqrt(batches)
            assert np.mean(v) <= _true_mi(rho, dim) + 3 * stderr + 1e-3, (kind, rho, v)
        assert est["infonce"][-1] <= np.log(k) + 1e-6
    for kind, v in est.items():
        assert v[0] < v[1] < v[2], (kind, v)
    # With the optimal critic TUBA (q = 1) is tight, and MI-alpha close to it; a critic that
    # assumes the wrong correlation stays clearly below the true MI.
    np.testing.assert_allclose(est["tuba"], [_true_mi(r, dim) for r in RHOS], atol=0.08)
    np.testing.assert_allclose(est["mi_alpha"], [_true_mi(r, dim) for r in RHOS], atol=0.15)
    rho, wrong = 0.8, 0.55
    off = []
    for b in range(batches):
        x, y = _gaussians(rho, k, dim, seed=100 * b + 5)
        s = jnp.asarray(_optimal_scores(x, y, wrong), jnp.float32)
        off.append(float(mi.interpolated_bound(s, jnp.zeros((k,)), 0.9)))
    assert 0 < np.mean(off) < _true_mi(rho, dim) - 0.2, off


def test_trained_critic_estimate_is_a_lower_bound_that_rises_with_correlation():
    """The Flax critic + baseline trained by maximising MI-alpha (alpha = 0.9) on samples of
    each correlation; on fresh samples its estimate is <= the true MI and increases."""
    dim, k = 2, 64
    critic = mi.Critic(hidden=64, out=16, kind="mlp", init_scale=5.0)
    tx = optax.adam(3e-3)

    def loss(p, x, y):
        scores, log_b = critic.apply({"params": p}, x, y)
        return -mi.interpolated_bound(scores, log_b, 0.9)

    @jax.jit
    def train(p, xs, ys):
        def step(carry, xy):
            p, o = carry
            g = jax.grad(loss)(p, *xy)
            u, o = tx.update(g, o, p)
            return (optax.apply_updates(p, u), o), None
        (p, _), _ = jax.lax.scan(step, (p, tx.init(p)), (xs, ys))
        return p

    evaluate = jax.jit(jax.vmap(lambda p, x, y: -loss(p, x, y), in_axes=(None, 0, 0)))
    estimates, steps = [], 200
    for rho in RHOS:
        x, y = _gaussians(rho, steps * k, dim, seed=7)
        p = jax.jit(critic.init)(jax.random.key(0), x[:k], y[:k])["params"]
        p = train(p, jnp.asarray(x.reshape(steps, k, dim)), jnp.asarray(y.reshape(steps, k, dim)))
        xe, ye = _gaussians(rho, 40 * k, dim, seed=11)
        vals = np.asarray(evaluate(p, xe.reshape(40, k, dim), ye.reshape(40, k, dim)))
        estimates.append(np.mean(vals))
        assert np.mean(vals) <= _true_mi(rho, dim) + 3 * np.std(vals) / np.sqrt(40), (rho, vals)
    assert estimates[0] < estimates[1] < estimates[2], estimates
    assert estimates[2] > 0.5 * _true_mi(RHOS[2], dim)  # it did learn
