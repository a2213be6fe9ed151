"""The latency predictor: a small MLP from (d, L, mean FFN, mean qkv), each normalised by the
space's maximum (theirs), to the latency at every measured batch size; an ensemble of
`members` such MLPs from different seeds, averaged in log space.

The ensemble is there because the table is small (tens of measured archs): one MLP fitted on
the first real table (45 archs) reached 0.6 % training error and 13.5 % held-out error at
batch 1; five smaller ones averaged held 7.7 % on average over eight random splits of the
same table (4.8-13.7 %).

It regresses log-latency (standardised), so its squared error weighs every arch by its
relative error, which is what the search's window needs (a fixed-ms error would swamp the
small archs the 8x budget asks for). `fit` holds out a seeded fraction of the table and
reports the mean relative error there (and on the training part); the returned predictor is
the one fitted on the training part only, so the held-out figure is the predictor's own.
Saved as plain JSON (weights as lists).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax

from prune_ofa_jax.nas import space as space_lib


@dataclasses.dataclass
class Predictor:
    weights: list          # [(W, b), ...] numpy, each with a leading ensemble-member axis
    feature_norm: np.ndarray
    mean: np.ndarray       # of log ms, per batch size
    std: np.ndarray
    batch_sizes: tuple

    def predict(self, archs) -> np.ndarray:
        """ms [N, len(batch_sizes)]."""
        x = np.stack([a.features() for a in archs]) / self.feature_norm
        y = np.asarray(_ensemble([(jnp.asarray(w), jnp.asarray(b)) for w, b in self.weights],
                                 jnp.asarray(x, jnp.float32))).mean(0)
        return np.exp(y * self.std + self.mean)

    def predict_one(self, arch: space_lib.Arch, batch) -> float:
        return float(self.predict([arch])[0, self.batch_sizes.index(int(batch))])

    def save(self, path) -> None:
        pathlib.Path(path).write_text(json.dumps({
            "weights": [[np.asarray(w).tolist(), np.asarray(b).tolist()]
                        for w, b in self.weights],
            "feature_norm": self.feature_norm.tolist(), "mean": self.mean.tolist(),
            "std": self.std.tolist(), "batch_sizes": list(self.batch_sizes)}))

    @classmethod
    def load(cls, path) -> "Predictor":
        d = json.loads(pathlib.Path(path).read_text())
        weights = [(np.asarray(w, np.float32), np.asarray(b, np.float32))
                   for w, b in d["weights"]]
        if weights[0][0].ndim == 2:  # a file from before the ensemble: one MLP, one member
            weights = [(w[None], b[None]) for w, b in weights]
        return cls(weights, np.asarray(d["feature_norm"]),
                   np.asarray(d["mean"]), np.asarray(d["std"]),
                   tuple(int(b) for b in d["batch_sizes"]))


def _mlp(weights, x):
    for w, b in weights[:-1]:
        x = jax.nn.relu(x @ w + b)
    w, b = weights[-1]
    return x @ w + b


_ensemble = jax.vmap(_mlp, in_axes=(0, None))   # [members, N, outputs]


def _init(sizes, key):
    keys = jax.random.split(key, len(sizes) - 1)
    return [(jax.random.normal(k, (m, n)) * np.sqrt(2.0 / m), jnp.zeros((n,)))
            for k, m, n in zip(keys, sizes[:-1], sizes[1:])]


def train(feats, ms, feature_norm, batch_sizes, hidden: int, layers: int, steps: int,
          lr: float, seed: int = 0, members: int = 1) -> Predictor:
    """Full-batch Adam on standardised log ms, all members at once (their losses are summed;
    Adam is elementwise, so each member trains as if alone)."""
    y = np.log(ms)
    mean, std = y.mean(0), y.std(0) + 1e-6
    x = jnp.asarray(feats / feature_norm, jnp.float32)
    t = jnp.asarray((y - mean) / std, jnp.float32)
    sizes = [x.shape[1]] + [hidden] * layers + [t.shape[1]]
    params = jax.vmap(lambda k: _init(sizes, k))(jax.random.split(jax.random.key(seed),
                                                                   members))
    tx = optax.adam(optax.cosine_decay_schedule(lr, steps))

    def loss_fn(p):
        return jnp.sum(jnp.mean(jnp.square(_ensemble(p, x) - t), axis=(1, 2)))

    def step(_, carry):
        params, opt = carry
        upd, opt = tx.update(jax.grad(loss_fn)(params), opt, params)
        return optax.apply_updates(params, upd), opt

    params, _ = jax.jit(lambda p: jax.lax.fori_loop(0, steps, step, (p, tx.init(p))))(params)
    return Predictor([(np.asarray(w), np.asarray(b)) for w, b in params],
                     np.asarray(feature_norm, np.float64), mean, std, tuple(batch_sizes))


def relative_error(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Mean |pred - true| / true per batch size."""
    return np.mean(np.abs(pred - true) / true, axis=0)


def fit(archs, feats, ms, space: space_lib.Space, batch_sizes, p_cfg, holdout: float,
        seed: int = 0) -> tuple[Predictor, dict]:
    """(predictor fitted on the training split, report with held-out errors)."""
    n = len(archs)
    perm = np.random.default_rng([seed, 17]).permutation(n)
    n_test = max(1, int(round(holdout * n)))
    test, tr = perm[:n_test], perm[n_test:]
    norm = space.top().features()
    pred = train(feats[tr], ms[tr], norm, batch_sizes, p_cfg.hidden, p_cfg.layers, p_cfg.steps,
                 p_cfg.lr, seed, p_cfg.members)
    err_test = relative_error(pred.predict([archs[i] for i in test]), ms[test])
    err_train = relative_error(pred.predict([archs[i] for i in tr]), ms[tr])
    report = {"n_train": int(len(tr)), "n_heldout": int(n_test),
              "heldout_mean_relative_error": {str(b): float(e)
                                              for b, e in zip(batch_sizes, err_test)},
              "train_mean_relative_error": {str(b): float(e)
                                            for b, e in zip(batch_sizes, err_train)}}
    return pred, report
