"""Layer-wise distillation, the intermediate-representation objective of a step (Distiller's
axis 1): hidden states of mapped student/teacher layer pairs compared by a distance (MSE,
cosine, PKD) or by a mutual-information bound with a learned critic, plus optional
attention-map KL.

Layer pairs come from `spec.layer_map`: skip / last (one-to-one, distill/intermediate.py) or
emd (every pair, weighted by the earth mover's plan, distill/emd.py). The map is computed at
trace time from the number of hidden states the models return, so the same code serves the
upstream (MLM) and the fine-tuning recipes and any student/teacher depth.

Trainable extras (one critic per pair for the MI bounds; a width projection per student
layer for the distances when the widths differ) form the aux part "distill"
(train/aux.py): trained with the student by the same optimizer (the student's schedule times
`distill.critic_lr_scale`), checkpointed with the state, never exported.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from prune_ofa_jax.convert import loader
from prune_ofa_jax.distill import emd, intermediate, mi
from prune_ofa_jax.distill import spec as spec_lib

AUX_NAME = "distill"


def layer_pairs(spec: spec_lib.Spec, num_student: int, num_teacher: int):
    """0-based (student layer, teacher layer) pairs the objective compares."""
    if spec.layer_map == "emd":
        return tuple((s, t) for s in range(num_student) for t in range(num_teacher))
    return intermediate.strategy_map(num_student, num_teacher, spec.layer_map)


def _critic(spec: spec_lib.Spec) -> mi.Critic:
    return mi.Critic(hidden=spec.critic_hidden, out=spec.critic_dim, kind=spec.critic)


def init_params(spec: spec_lib.Spec, student_dims, teacher_dims, seed: int = 0) -> dict:
    """The aux params: {"critic_s{s}_t{t}": ...} for MI bounds, {"proj_s{s}": ...} for a
    distance between different widths, {} otherwise. dims = (num_layers, hidden_size)."""
    if not spec.hidden:
        return {}
    (n_s, h_s), (n_t, h_t) = student_dims, teacher_dims
    key = jax.random.key(seed + 7919)
    params = {}
    dummy = lambda h: jnp.zeros((2, 4, h), jnp.float32)
    if spec.is_mi:
        for i, (s, t) in enumerate(layer_pairs(spec, n_s, n_t)):
            params[f"critic_s{s}_t{t}"] = _critic(spec).init(
                jax.random.fold_in(key, i), dummy(h_s), dummy(h_t), jnp.ones((2, 4)))["params"]
    elif h_s != h_t:
        students = sorted({s for s, _ in layer_pairs(spec, n_s, n_t)})
        for s in students:
            params[f"proj_s{s}"] = intermediate.HiddenProjection(h_t).init(
                jax.random.fold_in(key, s), dummy(h_s))["params"]
    return params


def _pair_term(spec, params, h_s, h_t, mask, s: int, t: int):
    """(loss, MI estimate or None) for one layer pair."""
    if spec.is_mi:
        scores, log_b = _critic(spec).apply({"params": params[f"critic_s{s}_t{t}"]}, h_s,
                                            jax.lax.stop_gradient(h_t), mask)
        est = mi.bound(spec.intermediate, scores, log_b, spec.mi_alpha)
        return -est, est
    proj = params.get(f"proj_s{s}")
    if proj is not None:
        h_s = intermediate.HiddenProjection(h_t.shape[-1]).apply({"params": proj}, h_s)
    return intermediate.DISTANCES[spec.intermediate](h_s, h_t, mask), None


def loss(spec: spec_lib.Spec, params, s_out: dict, t_out: dict, mask):
    """(spec.intermediate_weight * hidden term + spec.attention_weight * attention KL, terms)."""
    total, terms = jnp.zeros((), jnp.float32), {}
    params = params or {}
    if spec.hidden:
        hs, ht = s_out["hidden_states"], t_out["hidden_states"]  # embeddings + one per layer
        n_s, n_t = len(hs) - 1, len(ht) - 1
        pairs = layer_pairs(spec, n_s, n_t)
        results = [_pair_term(spec, params, hs[s + 1], ht[t + 1], mask, s, t) for s, t in pairs]
        costs = jnp.stack([r[0] for r in results])
        if spec.layer_map == "emd":
            inter, plan = emd.emd_loss(costs.reshape(n_s, n_t))
            weights = plan.reshape(-1)
        else:
            inter, weights = jnp.mean(costs), jnp.full((len(pairs),), 1.0 / len(pairs))
        terms[f"inter_{spec.intermediate}"] = inter
        if spec.is_mi:
            terms["mi_nats"] = jnp.sum(weights * jnp.stack([r[1] for r in results]))
        total = total + spec.intermediate_weight * inter
    if spec.attentions:
        n_s, n_t = len(s_out["attentions"]), len(t_out["attentions"])
        one_to_one = "skip" if spec.layer_map == "emd" else spec.layer_map
        attn = intermediate.attention_loss(
            s_out["attentions"], t_out["attentions"],
            intermediate.strategy_map(n_s, n_t, one_to_one), mask, kind="kl")
        terms["attn_kl"] = attn
        total = total + spec.attention_weight * attn
    return total, terms


# --- dims and the aux part ----------------------------------------------------------------

def student_dims(params) -> tuple:
    """(num_layers, hidden_size) of a BertFamily params tree."""
    backbone = params["backbone"]
    layers = [k for k in backbone["encoder"] if k.startswith("layer_")]
    return len(layers), int(backbone["embeddings"]["word_embeddings"]["embedding"].shape[1])


def teacher_dims(path: str) -> tuple:
    """(num_layers, hidden_size) of the model at `path` (any format convert.loader reads)."""
    mcfg = loader.model_config(path)
    return mcfg.num_layers, mcfg.hidden_size


def init_aux(config, params) -> dict:
    """The initial value of the run's trainable extras (critics, width projections; the aux
    part AUX_NAME, which train/build.py adds to the state), {} when it trains none."""
    spec = spec_lib.Spec.from_config(config)
    if not spec.hidden or not config.teacher.path:
        return {}
    return init_params(spec, student_dims(params), teacher_dims(config.teacher.path),
                       config.seed)
