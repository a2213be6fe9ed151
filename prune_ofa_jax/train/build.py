"""Assemble a run from its config: model, params, teacher, masks, optimizer, shardings, and
the jitted step. Used by the loop, the benchmarks and the tests, so all three compile the
very same step.

The door into the step from the user's own code, without editing the package:
`build(config, method=..., loss_terms=...)` (and `loop.run(config, workdir, method=...,
loss_terms=...)`, which passes them here): a pruning `Method` instance replaces the one
`config.sparsity.method` names, and `objectives.LossTerm`s are added to the objective.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from prune_ofa_jax import presets
from prune_ofa_jax.convert import loader
from prune_ofa_jax.distill import layer_kd
from prune_ofa_jax.distill import spec as distill_spec
from prune_ofa_jax.models import bert
from prune_ofa_jax.models import config as model_config_lib
from prune_ofa_jax.parallel import mesh as mesh_lib
from prune_ofa_jax.quant import qat as qat_lib
from prune_ofa_jax.sparsity import masks as masks_lib
from prune_ofa_jax.sparsity import methods
from prune_ofa_jax.train import aux as aux_lib
from prune_ofa_jax.train import evaluate as evaluate_lib
from prune_ofa_jax.train import objectives, optim, steps
from prune_ofa_jax.train.state import TrainState

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Run:
    """Everything a loop needs; the step is pure and jitted with shardings."""
    config: Any
    mesh: jax.sharding.Mesh
    model_config: Any
    model: nn.Module
    teacher: Optional[nn.Module]
    teacher_params: Any
    step_cfg: steps.StepConfig
    tx: Any
    lr_fn: Callable
    schedule: Any
    state: TrainState
    state_shardings: Any
    method: Any              # the pruning method (sparsity/methods): masks, scores, frozen
    step_fn: Callable        # jitted (state, teacher_params, batch) -> (state, metrics)
    eval_fn: Callable        # jitted (params, masks, quant_stats, batch) -> outputs
    fresh_leaves: list
    saved_task: str = ""     # the task recorded with the final params ("": config.task)

    def evaluate(self, state, data) -> dict:
        """The task's metrics on held-out data (train/evaluate.py)."""
        return evaluate_lib.evaluate(self, state, data)


def graft(fresh, loaded, source: str = "checkpoint"):
    """Leaves of `fresh` replaced by the same-path leaves of `loaded`; a leaf `loaded` lacks
    (e.g. a new task head) stays freshly initialised. A shape mismatch is an error.
    Returns (params, paths that stayed freshly initialised)."""
    flat_loaded = {jax.tree_util.keystr(k): v
                   for k, v in jax.tree_util.tree_leaves_with_path(loaded)}
    kept_fresh = []

    def pick(path, x):
        key = jax.tree_util.keystr(path)
        y = flat_loaded.get(key)
        if y is None:
            kept_fresh.append(key)
            return x
        if tuple(y.shape) != tuple(x.shape):
            raise ValueError(f"{source}: tensor {key} has shape {tuple(y.shape)}, the model "
                             f"expects {tuple(x.shape)}")
        return jnp.asarray(y, x.dtype)
    return jax.tree_util.tree_map_with_path(pick, fresh), kept_fresh


# Overrides a loaded checkpoint may take (regularisation, numerics); anything else would
# change parameter shapes or semantics and must match the checkpoint.
FREE_OVERRIDES = ("hidden_dropout", "attention_dropout", "classifier_dropout", "qa_dropout",
                  "dtype", "num_labels")


def _model_config(config, loaded_cfg):
    overrides = dict(config.model.overrides)
    if loaded_cfg is None:
        mcfg = model_config_lib.by_name(config.model.name, **overrides)
    else:
        for k, v in overrides.items():
            if k not in FREE_OVERRIDES and getattr(loaded_cfg, k, v) != v:
                raise ValueError(
                    f"config.model.overrides.{k}={v!r} conflicts with the checkpoint at "
                    f"config.init.path ({k}={getattr(loaded_cfg, k)!r})")
        mcfg = dataclasses.replace(loaded_cfg, **overrides)
    return dataclasses.replace(mcfg, num_labels=config.num_labels, dtype=config.model.dtype,
                               cls_head=config.model.cls_head)


def _quant_hooks(config):
    if not config.quant.enabled:
        return None, None
    qcfg = qat_lib.QuantConfig.from_dict(
        {k: v for k, v in config.quant.to_dict().items() if k != "enabled"})
    return qat_lib.make_injector(qcfg), qat_lib.embedding_quant(qcfg)


def prunable_include(config) -> tuple:
    """The coverage: sparsity.include (+ the embedding tables with sparsity.embeddings)."""
    sp = config.sparsity
    return tuple(sp.include) + ((masks_lib.EMBEDDINGS,) if sp.embeddings else ())


def make_masks(config, params):
    """Pruning run: all-True masks over the prunable leaves; fine-tuning with the pattern
    locked: masks from the nonzeros of the loaded weights; otherwise no masks."""
    sp = config.sparsity
    if sp.enabled or sp.lock_pattern:
        masks = masks_lib.init_masks(params, include=prunable_include(config),
                                     exclude=tuple(sp.exclude))
        return masks_lib.masks_from_nonzero(params, masks) if sp.lock_pattern else masks
    return jax.tree.map(lambda _: None, params)


def make_method(config):
    """The run's pruning method (sparsity/methods): the one registered under
    config.sparsity.method (magnitude, movement, adaprune, ...)."""
    return methods.from_config(config, regrow=bool(config.sparsity.regrow))


def aux_parts(config, params, param_shardings, lr_fn, method=None) -> dict:
    """The run's trainable extras beside the model (train/aux.py), name -> aux.Part: each
    feature that trains something of its own (learned-mask scores, MI critics) adds its part
    here. A plain run has none."""
    parts = {}
    method = method or make_method(config)
    if method.learns_scores:  # one score per prunable weight, sharded like the weight
        masks = make_masks(config, params)
        scores = method.init_scores(params, masks,
                                    jax.random.fold_in(jax.random.key(config.seed), 7))
        parts[methods.AUX_KEY] = aux_lib.Part(
            value=scores, tx=method.score_tx(lambda step: lr_fn(step) / config.optim.lr),
            shardings=masks_lib.mask_like(param_shardings, masks))
    critics = layer_kd.init_aux(config, params)  # MI critics, width projections
    if critics:
        scale = float(config.distill.critic_lr_scale)
        parts[layer_kd.AUX_NAME] = aux_lib.Part(
            value=critics, tx=optim.make_optimizer(config.optim, lambda s: scale * lr_fn(s)))
    return parts


def step_config(config, mesh=None, loss_terms=()) -> steps.StepConfig:
    kd = config.distill
    shards = 1 if mesh is None else mesh.shape["data"] * mesh.shape["fsdp"]
    return steps.StepConfig(
        task=config.task, num_labels=config.num_labels, seed=config.seed,
        task_weight=kd.task_weight if kd.kd_weight > 0 else 1.0, kd_weight=kd.kd_weight,
        temperature=kd.temperature, mlm_positions_only=kd.mlm_positions_only,
        fused_chunk=kd.fused_chunk, batch_shards=shards,
        qat=config.quant.enabled,
        distill=distill_spec.Spec.from_config(config),
        loss_terms=objectives.check_terms(loss_terms, config))


def build(config, mesh=None, *, method=None, loss_terms=()) -> Run:
    """Everything but the data. Params come from config.init.path (or random init). The
    preset is resolved here if the caller has not (the bench, the tests); train.steps is
    taken as given (loop.run resolves train.epochs from the data first).

    method: a pruning method (sparsity/methods/base.Method) built in the caller's code, used
    instead of the one config.sparsity.method names (the config still says what is pruned:
    sparsity.enabled, include/exclude); loss_terms: objectives.LossTerm's added to the
    objective and logged under their names."""
    if not presets.is_resolved(config):
        config = presets.resolve(config)
    if method is not None and not isinstance(method, methods.Method):
        raise TypeError(f"method: {method!r} is not a sparsity.methods.Method")
    mesh = mesh or mesh_lib.from_config(config.mesh)
    rules = tuple((k, tuple(v) if isinstance(v, (list, tuple)) else v)
                  for k, v in config.mesh.rules)
    loaded, loaded_cfg, fresh = None, None, []
    if config.init.path:
        loaded, loaded_cfg, _ = loader.load(config.init.path, config.task, config.num_labels,
                                            config.init.init_missing_heads)
    mcfg = _model_config(config, loaded_cfg)
    injector, emb_q = _quant_hooks(config)
    model = bert.BertFamily(mcfg, config.task, dense_injector=injector, embedding_quant=emb_q)

    if loaded is None:
        variables = nn.meta.unbox(bert.init_variables(model, jax.random.key(config.seed)))
    else:  # only what the checkpoint lacks is initialised (a new head, QAT's statistics)
        have = {"params/" + bert.path_str(k) for k, _ in
                jax.tree_util.tree_leaves_with_path(loaded)}
        variables = bert.init_some(model, jax.random.key(config.seed),
                                   lambda path: path not in have)
    params, quant_stats = variables["params"], variables.get("quant_stats", {})
    if loaded is not None:
        params, fresh = graft(params, loaded, f"config.init.path={config.init.path}")
        if fresh:
            log.warning("freshly initialised (not in %s): %s", config.init.path, fresh)

    step_cfg = step_config(config, mesh, loss_terms)
    total = config.train.steps
    sp = config.sparsity
    rewind = ((sp.begin_step, sp.end_step, sp.update_every)
              if sp.enabled and config.optim.lr_rewind else None)
    lr_fn = optim.learning_rate_fn(config.optim, total, rewind)
    tx = optim.make_optimizer(config.optim, lr_fn)
    masks = make_masks(config, params)
    method = dataclasses.replace(make_method(config) if method is None else method, mesh=mesh,
                                 model=mcfg)
    schedule = method.schedule

    # Shardings from the logical axis names of the (abstract) params.
    specs = bert.logical_specs(model)
    p_shard = mesh_lib.param_shardings(params, specs, mesh, rules)
    abstract_opt = jax.eval_shape(tx.init, params)
    aux, aux_tx, aux_shard = aux_lib.combine(aux_parts(config, params, p_shard, lr_fn, method),
                                             mesh)
    method_shard = method.state_shardings(jax.eval_shape(method.init_state, masks))
    if line := method.describe_state(masks):  # e.g. the memory OBS's Fisher takes
        log.info("%s", line)
    state_shardings = TrainState(
        step=mesh_lib.replicated(mesh, 0), params=p_shard,
        opt_state=mesh_lib.opt_state_shardings(tx, abstract_opt, p_shard, mesh),
        masks=masks_lib.mask_like(p_shard, masks),  # masks shard like their params
        quant_stats=mesh_lib.replicated(mesh, quant_stats),
        data_position=mesh_lib.replicated(mesh, 0), aux=aux_shard,
        aux_opt_state=mesh_lib.opt_state_shardings(
            aux_tx, jax.eval_shape(aux_tx.init, aux), aux_shard, mesh) if aux else {},
        method_state=method_shard)
    # Build the state inside jit so every leaf lands in its own buffer with its sharding (the
    # method's state too: a Fisher's zeros are made on the devices, never on the host).
    state = jax.jit(lambda p, m, q, a: TrainState.create(p, tx, m, q, a, aux_tx,
                                                         method.init_state(m)),
                    out_shardings=state_shardings)(
        *jax.device_get((params, masks, quant_stats, aux)))

    teacher = teacher_params = None
    if config.distill.kd_weight > 0:
        teacher, teacher_params = _teacher(config, mcfg, mesh, rules)

    step_fn = functools.partial(steps.train_step, model=model, teacher=teacher, tx=tx, cfg=step_cfg,
                                lr_fn=lr_fn, method=method, aux_tx=aux_tx)
    batch_shard = mesh_lib.batch_sharding(mesh)
    t_shard = None if teacher_params is None else jax.tree.map(lambda x: x.sharding,
                                                               teacher_params)
    jitted = jax.jit(step_fn, in_shardings=(state_shardings, t_shard, batch_shard),
                     out_shardings=(state_shardings, None), donate_argnums=0)
    eval_fn = jax.jit(functools.partial(steps.eval_step, model=model, cfg=step_cfg))
    return Run(config=config, mesh=mesh, model_config=mcfg, model=model, teacher=teacher,
               teacher_params=teacher_params, step_cfg=step_cfg, tx=tx, lr_fn=lr_fn,
               schedule=schedule, state=state, state_shardings=state_shardings,
               method=method, step_fn=jitted, eval_fn=eval_fn, fresh_leaves=fresh,
               saved_task=config.task)


def _teacher(config, student_cfg, mesh, rules):
    """The frozen teacher: loaded once, sharded like a student of its shape, never saved."""
    if not config.teacher.path:
        raise ValueError("config.teacher.path: distillation (distill.kd_weight > 0) needs a "
                         "teacher (an HF dir or a params checkpoint)")
    loaded, tcfg, _ = loader.load(config.teacher.path, config.task, config.num_labels)
    tcfg = dataclasses.replace(tcfg, num_labels=config.num_labels, dtype=student_cfg.dtype)
    teacher = bert.BertFamily(tcfg, config.task)
    shapes = bert.init_some(teacher, jax.random.key(0), lambda path: False)["params"]
    params, missing = graft(shapes, loaded, f"config.teacher.path={config.teacher.path}")
    if missing:
        raise ValueError(f"teacher {config.teacher.path} lacks {missing} for task "
                         f"{config.task!r}; a teacher must have the task's heads")
    specs = bert.logical_specs(teacher)
    shard = mesh_lib.param_shardings(params, specs, mesh, rules)
    return teacher, jax.jit(lambda t: t, out_shardings=shard)(jax.device_get(params))
