"""The search's fitness: the score of a sub-model after a short fine-tune on each task, on
rows held out of the task's TRAINING split (`heldout_rows`, a slice fixed by
data.split_seed), so the search never sees the dev set the final table reports.

The sub-model is cut from the supernet at its exact shape (nas/elastic.py: no padding, no
masks), gets a fresh classifier on the pooled [CLS], and is fine-tuned for `steps` steps
(AdamW, 10 % warmup, dropout on) on the rest of the train split, then scored on the held-out
slice (`heldout_rows` 0: on the full dev set instead).
Task score: the mean of the task's GLUE metrics (SST-2: accuracy; MRPC: F1 and accuracy);
fitness: the mean over tasks (theirs: MNLI and SQuAD at scale).

This is the inner loop of the search (tens of tiny fine-tunes), so it runs in-process with
the data tokenised once and one jitted step whose compiled versions are keyed by the arch's
shapes; a full train/loop.py run per candidate would spend most of its time on setup. The
found models are then fine-tuned as ordinary runs (nas/stages.py).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from prune_ofa_jax import config_base
from prune_ofa_jax.data import classification
from prune_ofa_jax.eval import glue_metrics
from prune_ofa_jax.nas import elastic
from prune_ofa_jax.train import inputs as inputs_lib
from prune_ofa_jax.train import optim


def data_config(base, task: str, seq_len: int, batch_size: int, train_subset: int,
                eval_subset: int):
    """A config_base config reading one GLUE task (the shared data, the run's tokenizer)."""
    c = config_base.base()
    c.seed = base.seed
    c.data.kind, c.data.glue_task = "glue", task
    c.data.root, c.data.tokenizer = base.data.root, base.data.tokenizer
    c.data.seq_len, c.train.batch_size, c.train.eval_batch_size = seq_len, batch_size, 128
    c.data.train_subset, c.data.eval_subset = train_subset, eval_subset
    c.data.split_seed = base.data.split_seed
    return c


def sources(base, task: str, f_cfg) -> inputs_lib.Sources:
    """Train rows and the rows the fitness scores: a held-out slice of the train split
    (`f_cfg.heldout_rows` > 0; the fine-tunes train on the other rows, `train_subset` of
    them when set), else the dev set."""
    c = data_config(base, task, f_cfg.seq_len, f_cfg.batch_size, f_cfg.train_subset,
                    f_cfg.eval_subset)
    if not f_cfg.heldout_rows:
        return inputs_lib.make_sources(c)
    c.data.train_subset = 0
    train_ex, _ = inputs_lib.classification_examples(c)
    if f_cfg.heldout_rows >= len(train_ex):
        raise ValueError(f"config.nas.fitness.heldout_rows={f_cfg.heldout_rows}: the {task} "
                         f"train split has only {len(train_ex)} rows")
    held, rest = heldout_split(len(train_ex), f_cfg.heldout_rows, c.data.split_seed,
                               f_cfg.train_subset)
    tok = inputs_lib.tokenizer(c)[1]
    kw = dict(max_len=f_cfg.seq_len, seed=base.seed)
    return inputs_lib.Sources(
        train=classification.ClassificationDataset(train_ex.subset(rest), tok,
                                                   batch_size=f_cfg.batch_size, **kw),
        eval=classification.ClassificationDataset(train_ex.subset(held), tok,
                                                  batch_size=128, **kw),
        metrics=None)


def heldout_split(n: int, heldout: int, split_seed: int, train_subset: int = 0) -> tuple:
    """(held-out indices, train indices) of n train rows, disjoint and sorted; seeded by
    split_seed only (the same slice for every run seed); train_subset > 0 keeps that many
    of the train indices."""
    perm = np.random.default_rng([split_seed, 29]).permutation(n)
    held, rest = perm[:heldout], perm[heldout:]
    if 0 < train_subset < len(rest):
        rest = rest[:train_subset]
    return np.sort(held), np.sort(rest)


def _logits(params, batch, cfg, deterministic: bool, rng):
    out = elastic.forward(params["model"], batch["input_ids"], batch["attention_mask"],
                          batch["token_type_ids"], cfg=cfg, deterministic=deterministic,
                          rng=rng)
    pooled = out["pooled"]
    if not deterministic:
        keep = jax.random.bernoulli(jax.random.fold_in(rng, 99), 1 - cfg.hidden_dropout,
                                    pooled.shape)
        pooled = jnp.where(keep, pooled / (1 - cfg.hidden_dropout), 0.0)
    return pooled @ params["head"]["kernel"] + params["head"]["bias"]


@functools.partial(jax.jit, static_argnames=("cfg", "tx"), donate_argnums=(0, 1))
def _train_step(params, opt_state, batch, rng, *, cfg, tx):
    def loss_fn(p):
        logits = _logits(p, batch, cfg, False, rng)
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"]).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


@functools.partial(jax.jit, static_argnames=("cfg",))
def _eval_logits(params, batch, *, cfg):
    return _logits(params, batch, cfg, True, None)


def task_score(task: str, metrics: dict) -> float:
    return float(np.mean([v for k, v in metrics.items() if k != "score"]))


class Fitness:
    """fitness(arch) -> {task: score, ..., "fitness": mean}; data tokenised once."""

    def __init__(self, params, cfg, f_cfg, base_config):
        self.params, self.cfg, self.f = params, cfg, f_cfg
        self.device = jax.local_devices()[0]
        self.seed = base_config.seed
        self.data = {t: sources(base_config, t, f_cfg) for t in f_cfg.tasks}
        ocfg = ml_collections.ConfigDict(dict(
            lr=f_cfg.lr, warmup_steps=max(1, f_cfg.steps // 10), weight_decay=0.01, b1=0.9,
            b2=0.999, eps=1e-6, grad_clip=1.0))
        self.tx = optim.make_optimizer(ocfg, optim.learning_rate_fn(ocfg, f_cfg.steps))

    def finetune(self, arch, task: str) -> dict:
        """GLUE metrics on the scored rows (held-out train rows, or dev) after `steps` steps
        of fine-tuning `arch` on `task`."""
        src = self.data[task]
        # Everything committed to one device, so the first call and the rest share one
        # compiled step (an uncommitted argument is a different jit signature).
        put = lambda t: jax.device_put(t, self.device)
        key = jax.random.key(self.seed)
        head = {"kernel": 0.02 * jax.random.normal(key, (arch.hidden, 2)),
                "bias": jnp.zeros((2,))}
        params = {"model": elastic.slice_params(self.params, arch, self.cfg.num_heads),
                  "head": head}
        params = put(jax.tree.map(jnp.array, params))  # own buffers (the step donates them)
        opt_state = put(self.tx.init(params))
        for s in range(self.f.steps):
            params, opt_state, _ = _train_step(params, opt_state, put(src.train.batch(s)),
                                               put(jax.random.fold_in(key, s + 1)),
                                               cfg=self.cfg, tx=self.tx)
        logits, labels, weights = [], [], []
        for batch in src.eval.eval_batches(128):
            inp = put({k: batch[k] for k in ("input_ids", "attention_mask",
                                             "token_type_ids")})
            logits.append(np.asarray(_eval_logits(params, inp, cfg=self.cfg)))
            labels.append(batch["labels"])
            weights.append(batch["weights"])
        return glue_metrics.compute(task, np.concatenate(logits), np.concatenate(labels),
                                    np.concatenate(weights))

    def __call__(self, arch) -> dict:
        out = {t: task_score(t, self.finetune(arch, t)) for t in self.f.tasks}
        out["fitness"] = float(np.mean(list(out.values())))
        return out
