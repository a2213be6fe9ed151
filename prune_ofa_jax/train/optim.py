"""AdamW with decoupled weight decay (not on LayerNorm or biases), warmup + linear decay,
and Prune OFA's learning-rate rewinding inside the pruning window."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def decay_mask(params):
    """Weight decay on kernels and embedding tables only; never LayerNorm scales or biases."""
    def leaf(path, _):
        name = getattr(path[-1], "key", str(path[-1]))
        return name in ("kernel", "embedding")
    return jax.tree_util.tree_map_with_path(leaf, params)


def learning_rate_fn(optim_cfg, total_steps: int, rewind=None):
    """Linear warmup to `lr`, then linear decay to 0 at `total_steps`.

    rewind=(start, end, every): inside the pruning window [start, end) the schedule's clock is
    rewound at every mask update to the window start (or the end of warmup, if later), so
    each interval replays the linear decay from the window-start value; after the window the
    rate decays linearly from that value to 0 at `total_steps`. This is the shape of the
    reference's `get_linear_rewinding_schedule_with_warmup`; warmup is never replayed.
    """
    warmup = int(optim_cfg.warmup_steps)
    base = optax.join_schedules(
        [optax.linear_schedule(0.0, optim_cfg.lr, max(warmup, 1)),
         optax.linear_schedule(optim_cfg.lr, 0.0, max(total_steps - warmup, 1))],
        boundaries=[warmup])

    if rewind is None:
        return base
    start, end, every = (int(v) for v in rewind)
    start = max(start, warmup)

    def schedule(step):
        step = jnp.asarray(step)
        rewound = base(start + (step - start) % every)
        after = base(start) * jnp.clip((total_steps - step) / max(total_steps - end, 1), 0, 1)
        return jnp.where(step < start, base(step), jnp.where(step < end, rewound, after))
    return schedule


def make_optimizer(optim_cfg, lr_fn) -> optax.GradientTransformation:
    parts = []
    if optim_cfg.grad_clip > 0:
        parts.append(optax.clip_by_global_norm(optim_cfg.grad_clip))
    parts.append(optax.adamw(lr_fn, b1=optim_cfg.b1, b2=optim_cfg.b2, eps=optim_cfg.eps,
                             weight_decay=optim_cfg.weight_decay, mask=decay_mask))
    return optax.chain(*parts)
