"""One-shot training of the elastic supernet (AutoTinyBERT, KD setting), as an ordinary run.

`build(config)` returns a `SupernetRun` that `train/loop.py` runs like any other (resume,
checkpoints, NaN guard, metrics, report.json): `loop.run(config, workdir, build_fn=build)`.

The step, `supernet_step(state, teacher_params, batch, active, *, shape, ...)`, is pure and
is jitted with the state's, the teacher's and the batch's shardings on the named Mesh
(data-parallel and FSDP by the same logical-axis rules as the main model). One arch per step:
`space.sample_for_step(space, seed, step)`, a pure function of the step, so every host draws
the same. The arch runs masked inside its bucket (nas/elastic.py), so `CachedSteps` compiles
one executable per bucket on first use and reuses it (`.compiles` counts them).

Loss (theirs): MSE between the last layer's attention scores of student and teacher
(pre-softmax, masked keys zeroed) + MSE between W_fit h_S and h_T on the last hidden layer.
W_fit ([max hidden, teacher hidden], input rows sliced to the arch's width) is a trainable
extra beside the model: it lives in `state.aux["fit"]`, is checkpointed, never exported.
The step reads the uncorrupted text: the pipeline's MLM corruption is undone from
masked_lm_ids (their KD setting uses no masking).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from prune_ofa_jax import presets
from prune_ofa_jax.convert import loader
from prune_ofa_jax.models import bert
from prune_ofa_jax.models import config as model_config_lib
from prune_ofa_jax.nas import elastic
from prune_ofa_jax.nas import rewire as rewire_lib
from prune_ofa_jax.nas import space as space_lib
from prune_ofa_jax.parallel import mesh as mesh_lib
from prune_ofa_jax.sparsity import masks as masks_lib
from prune_ofa_jax.sparsity.methods import base as base_method
from prune_ofa_jax.train import aux as aux_lib
from prune_ofa_jax.train import build as build_lib
from prune_ofa_jax.train import optim
from prune_ofa_jax.train.state import TrainState

log = logging.getLogger(__name__)

EVAL_ARCHS = ("top", "bottom")   # eval: the largest and the smallest arch of the space


def restore_tokens(batch: dict) -> jax.Array:
    """input_ids with the MLM corruption undone (masked positions get their original ids)."""
    ids = batch["input_ids"]
    pos = batch["masked_lm_positions"]
    current = jnp.take_along_axis(ids, pos, axis=1)
    original = jnp.where(batch["masked_lm_weights"] > 0, batch["masked_lm_ids"], current)
    return ids.at[jnp.arange(ids.shape[0])[:, None], pos].set(original)


def kd_terms(student: dict, teacher: dict, fit: dict, attention_mask) -> dict:
    """{"att_loss", "rep_loss"}: their two MSE terms (means over every entry)."""
    s = elastic.masked_scores(student["scores"], attention_mask)
    t = elastic.masked_scores(teacher["scores"], attention_mask)
    h = student["last_hidden_state"]
    h_fit = h @ fit["kernel"][:h.shape[-1]] + fit["bias"]
    return {"att_loss": jnp.mean(jnp.square(s - t)),
            "rep_loss": jnp.mean(jnp.square(h_fit - teacher["last_hidden_state"]))}


def _teacher_out(teacher_params, ids, batch, tcfg):
    out = elastic.forward(teacher_params, ids, batch["attention_mask"], batch["token_type_ids"],
                          cfg=tcfg)
    return jax.lax.stop_gradient(out)


def supernet_step(state: TrainState, teacher_params: Any, batch: dict, active: jax.Array, *,
                  shape: space_lib.Arch, cfg, tx, aux_tx, lr_fn: Callable, seed: int,
                  att_weight: float, rep_weight: float):
    """One optimizer step of the arch `active` (run in the bucket `shape`) over `batch`
    ([accum, micro_batch, ...]); pure."""
    rng = jax.random.fold_in(jax.random.key(seed), state.step)

    def micro(grads_sum, xs):
        mb, k = xs
        ids = restore_tokens(mb)
        t_out = _teacher_out(teacher_params, ids, mb, cfg)

        def loss_fn(p, a):
            out = elastic.forward(elastic.slice_params(p, shape, cfg.num_heads), ids,
                                  mb["attention_mask"], mb["token_type_ids"], cfg=cfg,
                                  active=active, deterministic=False,
                                  rng=jax.random.fold_in(rng, k))
            terms = kd_terms(out, t_out, a["fit"], mb["attention_mask"])
            loss = att_weight * terms["att_loss"] + rep_weight * terms["rep_loss"]
            return loss, {"loss": loss, **terms}

        (_, terms), grads = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(
            state.params, state.aux)
        return jax.tree.map(jnp.add, grads_sum, grads), terms

    accum = batch["input_ids"].shape[0]
    zeros = jax.tree.map(jnp.zeros_like, (state.params, state.aux))
    (grads, aux_grads), terms = jax.lax.scan(micro, zeros, (batch, jnp.arange(accum)))
    grads = jax.tree.map(lambda g: g / accum, grads)
    aux_updates, aux_opt_state = aux_tx.update(jax.tree.map(lambda g: g / accum, aux_grads),
                                               state.aux_opt_state, state.aux)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    metrics = {k: v.mean() for k, v in terms.items()}
    metrics.update(lr=lr_fn(state.step), grad_norm=optax.tree.norm(grads),
                   sparsity=jnp.zeros((), jnp.float32),
                   **{k: active[i] for i, k in enumerate(space_lib.DIMS)})
    return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                         opt_state=opt_state, data_position=state.data_position + 1,
                         aux=optax.apply_updates(state.aux, aux_updates),
                         aux_opt_state=aux_opt_state), metrics


class CachedSteps:
    """The loop's step_fn: draws the arch of `state.step`, runs it in its bucket's compiled
    step (compiled ahead of time on first use, then reused). `compiles` counts them."""

    def __init__(self, make_jitted: Callable, space: space_lib.Space,
                 buckets: space_lib.Buckets, seed: int, mesh):
        self.make_jitted, self.space, self.buckets, self.seed = make_jitted, space, buckets, seed
        self.active_sharding = NamedSharding(mesh, P())
        self.compiled: dict = {}
        self.compiles = 0

    def arch_at(self, step: int) -> space_lib.Arch:
        return space_lib.sample_for_step(self.space, self.seed, step)

    def __call__(self, state, teacher_params, batch):
        # Reading the step waits for the previous step; the next batch is already built.
        arch = self.arch_at(int(jax.device_get(state.step)))
        shape = self.buckets.of(arch)
        active = jax.device_put(np.asarray(elastic.active_array(arch)), self.active_sharding)
        fn = self.compiled.get(shape)
        if fn is None:
            log.info("compiling the supernet step for bucket %s", shape.key())
            fn = self.make_jitted(shape).lower(state, teacher_params, batch, active).compile()
            self.compiled[shape] = fn
            self.compiles += 1
        return fn(state, teacher_params, batch, active)


@dataclasses.dataclass
class SupernetRun:
    """What train/loop.py reads of a run (see loop.run), for the supernet's own step."""
    config: Any
    mesh: jax.sharding.Mesh
    model_config: model_config_lib.ModelConfig
    space: space_lib.Space
    buckets: space_lib.Buckets
    teacher_params: Any
    state: TrainState
    state_shardings: Any
    step_fn: CachedSteps
    teacher: Any = None          # the loop's "teacher" line is ours (see _describe)
    saved_task: str = "base"
    method: Any = base_method.Method()  # no pruning: masks stay as they are

    def evaluate(self, state, data) -> dict:
        """KD loss on held-out text at the space's largest and smallest arch."""
        archs = {"top": self.space.top(),
                 "bottom": space_lib.Arch(*(getattr(self.space, k)[0] for k in space_lib.DIMS))}
        out = {}
        for name in EVAL_ARCHS:
            fn = _eval_fn(self.model_config, archs[name])
            total = []
            for i in range(self.config.data.eval_batches):
                batch = mesh_lib.global_batch(data.eval.batch(i), self.mesh, accum=None)
                total.append(jax.device_get(fn(state.params, state.aux, self.teacher_params,
                                               batch)))
            for k in total[0]:
                out[f"eval_{k}_{name}"] = float(np.mean([t[k] for t in total]))
        return out


@functools.lru_cache(maxsize=8)
def _eval_fn(cfg, arch: space_lib.Arch):
    def fn(params, aux, teacher_params, batch):
        ids = restore_tokens(batch)
        t_out = _teacher_out(teacher_params, ids, batch, cfg)
        out = elastic.forward(elastic.slice_params(params, arch, cfg.num_heads), ids,
                              batch["attention_mask"], batch["token_type_ids"], cfg=cfg)
        return kd_terms(out, t_out, aux["fit"], batch["attention_mask"])
    return jax.jit(fn)


def load_teacher(path: str):
    """(params, ModelConfig) of the dense teacher as a BertFamily "base" tree (no heads)."""
    loaded, tcfg, _ = loader.load(path, "base", 2)
    model = bert.BertFamily(tcfg, "base")
    shapes = bert.init_some(model, jax.random.key(0), lambda path: False)["params"]
    params, missing = build_lib.graft(shapes, loaded, f"teacher {path}")
    if missing:
        raise ValueError(f"config.teacher.path={path} lacks {missing}")
    return params, tcfg


def _aux_fit(hidden: int, teacher_hidden: int, from_teacher: bool, seed: int,
             perm=None) -> dict:
    """W_fit: when the supernet starts from the teacher, the map that makes the full arch
    match h_T at step 0 (identity, or the rewiring's inverse permutation); else BERT's
    normal(0.02) init."""
    if perm is not None:
        kernel = jnp.asarray(rewire_lib.fit_init(perm, teacher_hidden))
    elif from_teacher:
        kernel = jnp.eye(hidden, teacher_hidden, dtype=jnp.float32)
    else:
        kernel = 0.02 * jax.random.normal(jax.random.key(seed + 1), (hidden, teacher_hidden))
    return {"kernel": kernel, "bias": jnp.zeros((teacher_hidden,), jnp.float32)}


def build(config, mesh=None) -> SupernetRun:
    """config: a config_base config with a `nas` section (nas/config.py). The supernet has the
    teacher's shape; config.init.path "" = random init, else those weights (the teacher's)."""
    if not presets.is_resolved(config):
        config = presets.resolve(config)
    mesh = mesh or mesh_lib.from_config(config.mesh)
    rules = tuple((k, tuple(v) if isinstance(v, (list, tuple)) else v)
                  for k, v in config.mesh.rules)
    if not config.teacher.path:
        raise ValueError("config.teacher.path: the supernet distils from a dense teacher (an "
                         "HF dir or a params checkpoint), e.g. MiniLM's")
    teacher_params, tcfg = load_teacher(config.teacher.path)
    tcfg = tcfg.replace(dtype="float32")
    space = space_lib.Space.from_config(config.nas.space, tcfg.num_heads)
    space.top().check_within(space_lib.Arch(tcfg.num_layers, tcfg.hidden_size,
                                            tcfg.intermediate_size, tcfg.hidden_size),
                             tcfg.num_heads, "config.nas.space (largest arch)")
    buckets = space_lib.Buckets.from_config(config.nas.buckets, space)
    model = bert.BertFamily(tcfg, "base")
    perm = None
    if config.init.path:
        params, _ = load_teacher(config.init.path)
        if config.nas.rewire:
            params, perm = rewire_lib.rewire(jax.device_get(params), tcfg.num_heads)
    else:
        params = bert.init_params(model, jax.random.key(config.seed))
    lr_fn = optim.learning_rate_fn(config.optim, config.train.steps)
    tx = optim.make_optimizer(config.optim, lr_fn)
    p_shard = mesh_lib.param_shardings(params, bert.logical_specs(model), mesh, rules)
    aux_part = aux_lib.Part(_aux_fit(tcfg.hidden_size, tcfg.hidden_size,
                                     bool(config.init.path), config.seed, perm), tx)
    aux, aux_tx, aux_shard = aux_lib.combine({"fit": aux_part}, mesh)
    masks = jax.tree.map(lambda _: None, params)
    state_shardings = TrainState(
        step=mesh_lib.replicated(mesh, 0), params=p_shard,
        opt_state=mesh_lib.opt_state_shardings(tx, jax.eval_shape(tx.init, params), p_shard,
                                               mesh),
        masks=masks_lib.mask_like(p_shard, masks), quant_stats={},
        data_position=mesh_lib.replicated(mesh, 0), aux=aux_shard,
        # W_fit is small and replicated, so is its optimizer state. (opt_state_shardings
        # cannot map aux_tx: optax's placeholder params break multi_transform's label fn.)
        aux_opt_state=mesh_lib.replicated(mesh, jax.eval_shape(aux_tx.init, aux)))
    state = jax.jit(lambda p, m, a: TrainState.create(p, tx, m, {}, a, aux_tx),
                    out_shardings=state_shardings)(*jax.device_get((params, masks, aux)))
    t_shard = p_shard
    teacher_params = jax.jit(lambda t: t, out_shardings=t_shard)(jax.device_get(teacher_params))
    batch_shard = mesh_lib.batch_sharding(mesh)
    kd = config.nas.kd

    def make_jitted(shape):
        fn = functools.partial(supernet_step, shape=shape, cfg=tcfg, tx=tx, aux_tx=aux_tx,
                               lr_fn=lr_fn, seed=config.seed, att_weight=kd.att_weight,
                               rep_weight=kd.rep_weight)
        return jax.jit(fn, in_shardings=(state_shardings, t_shard, batch_shard,
                                         NamedSharding(mesh, P())),
                       out_shardings=(state_shardings, None), donate_argnums=0)

    steps = CachedSteps(make_jitted, space, buckets, config.seed, mesh)
    log.info("supernet: %s, space %s, %d buckets", tcfg.to_dict(), space, len(buckets.all(space)))
    return SupernetRun(config=config, mesh=mesh, model_config=tcfg, space=space,
                       buckets=buckets, teacher_params=teacher_params, state=state,
                       state_shardings=state_shardings, step_fn=steps)
