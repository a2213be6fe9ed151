"""Intermediate-representation distillation: hidden states and attention maps.

Indexing convention (matches the models' outputs): `hidden_states` is a tuple whose entry 0
is the embeddings output and entry i+1 the output of layer i; `attentions[i]` is layer i's
[B, heads, L, L] probabilities. A layer map is a tuple of 0-based (student_layer,
teacher_layer) pairs. `mask` is the [B, L] attention/padding mask (1 = real token).
Teacher tensors are always under `stop_gradient`; everything accumulates in float32.

The hidden-state distances are registered in `DISTANCES` under their `distill.intermediate`
name, each `fn(student, teacher, mask) -> scalar` on one layer pair's [B, L, H] states. A new
one is one function here (or in a user's own code) decorated with
`@intermediate.DISTANCES.register("name")`. The names are disjoint from the MI bounds'
(distill/mi.py), which select the same key.
"""

from typing import Callable, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from prune_ofa_jax import registry
from prune_ofa_jax.distill import mi, reduction

Array = jax.Array
LayerMap = Tuple[Tuple[int, int], ...]

DISTANCES = registry.Registry(
    "hidden-state distance", "distill.intermediate", disjoint=(mi.BOUNDS,),
    hint="add one with @prune_ofa_jax.distill.intermediate.DISTANCES.register(name)")


def layer_map(num_student: int, num_teacher: int,
              explicit: Optional[Sequence[int]] = None) -> LayerMap:
    """Student layer j -> teacher layer, 0-based.

    Uniform (TinyBERT `g(m) = m * N / M`, DistilBERT's every-other-layer): student layer j
    takes teacher layer `(j + 1) * N // M - 1`, so the last student layer always maps to
    the last teacher layer. `explicit[j]` gives the teacher layer of student layer j.
    """
    if num_student < 1 or num_teacher < num_student:
        raise ValueError(f"need 1 <= num_student <= num_teacher, got "
                         f"{num_student}, {num_teacher}")
    if explicit is None:
        targets = [(j + 1) * num_teacher // num_student - 1 for j in range(num_student)]
    else:
        targets = [int(t) for t in explicit]
        if len(targets) != num_student or not all(0 <= t < num_teacher for t in targets):
            raise ValueError(f"explicit map {explicit} invalid for {num_student} student / "
                             f"{num_teacher} teacher layers")
    return tuple(enumerate(targets))


STRATEGIES = ("skip", "last")


def strategy_map(num_student: int, num_teacher: int, strategy: str) -> LayerMap:
    """Distiller's one-to-one maps, 0-based: "skip" = student layer j -> teacher layer
    floor((j + 1) * N / M) - 1 (1-based: i -> floor(i * N / M)), the uniform map above;
    "last" = the top M teacher layers in order (j -> N - M + j)."""
    if strategy == "skip":
        return layer_map(num_student, num_teacher)
    if strategy == "last":
        return layer_map(num_student, num_teacher,
                         [num_teacher - num_student + j for j in range(num_student)])
    raise ValueError(f"unknown layer map strategy {strategy!r}; one of {STRATEGIES} (or emd, "
                     "see distill/emd.py)")


def _token_weights(mask: Optional[Array]) -> Optional[Array]:
    return None if mask is None else jnp.asarray(mask, jnp.float32)


@DISTANCES.register("mse")
def hidden_mse(student: Array, teacher: Array, mask: Optional[Array] = None) -> Array:
    """Mean over features of the squared error, then weighted mean over real tokens."""
    teacher = jax.lax.stop_gradient(jnp.asarray(teacher, jnp.float32))
    student = jnp.asarray(student, jnp.float32)
    if student.shape != teacher.shape:
        raise ValueError(f"hidden shapes differ {student.shape} vs {teacher.shape}; "
                         "project the student with HiddenProjection")
    return reduction.weighted_mean(jnp.square(student - teacher), _token_weights(mask))


@DISTANCES.register("cosine")
def hidden_cosine(student: Array, teacher: Array, mask: Optional[Array] = None,
                  eps: float = 1e-8) -> Array:
    """Weighted mean over real tokens of `1 - cos(student, teacher)` (DistilBERT's term)."""
    teacher = jax.lax.stop_gradient(jnp.asarray(teacher, jnp.float32))
    student = jnp.asarray(student, jnp.float32)
    dot = jnp.sum(student * teacher, -1)
    norms = jnp.linalg.norm(student, axis=-1) * jnp.linalg.norm(teacher, axis=-1)
    cos = dot / jnp.maximum(norms, eps)
    return reduction.weighted_mean(1.0 - cos, _token_weights(mask))


@DISTANCES.register("pkd")
def hidden_pkd(student: Array, teacher: Array, mask: Optional[Array] = None) -> Array:
    """BERT-PKD's normalised MSE on the first token: mean over the batch of
    ||s / |s| - t / |t| ||^2 (summed over features). `mask` is unused (position 0 is real)."""
    del mask
    teacher = jax.lax.stop_gradient(jnp.asarray(teacher, jnp.float32))
    student = jnp.asarray(student, jnp.float32)
    if student.ndim == 3:
        student, teacher = student[:, 0], teacher[:, 0]
    unit = lambda x: x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-8)
    return jnp.mean(jnp.sum(jnp.square(unit(student) - unit(teacher)), -1))


def _check_attn(student: Array, teacher: Array) -> None:
    if student.shape != teacher.shape:
        raise ValueError(f"attention shapes differ {student.shape} vs {teacher.shape} "
                         "(student and teacher need the same number of heads)")


def attention_kl(student: Array, teacher: Array, mask: Optional[Array] = None,
                 eps: float = 1e-12) -> Array:
    """KL(teacher row || student row) per (batch, head, query) over the keys, averaged
    over heads and real query tokens; padded keys are dropped from each row's sum.

    Inputs are probabilities [B, heads, L, L] (what the models return).
    """
    _check_attn(student, teacher)
    pt = jax.lax.stop_gradient(jnp.asarray(teacher, jnp.float32))
    ps = jnp.asarray(student, jnp.float32)
    term = jnp.where(pt > 0, pt * (jnp.log(jnp.maximum(pt, eps))
                                   - jnp.log(jnp.maximum(ps, eps))), 0.0)
    if mask is not None:
        term = jnp.where(jnp.asarray(mask)[:, None, None, :] != 0, term, 0.0)
    kl = jnp.sum(term, axis=-1)  # [B, heads, L]
    weights = None if mask is None else jnp.asarray(mask, jnp.float32)[:, None, :]
    return reduction.weighted_mean(kl, weights)


def attention_mse(student: Array, teacher: Array, mask: Optional[Array] = None) -> Array:
    """Mean squared error over heads and (real query, real key) pairs."""
    _check_attn(student, teacher)
    teacher = jax.lax.stop_gradient(jnp.asarray(teacher, jnp.float32))
    err = jnp.square(jnp.asarray(student, jnp.float32) - teacher)
    weights = None
    if mask is not None:
        m = jnp.asarray(mask, jnp.float32)
        weights = m[:, None, :, None] * m[:, None, None, :]
    return reduction.weighted_mean(err, weights)


def hidden_loss(student_states: Sequence[Array], teacher_states: Sequence[Array],
                mapping: LayerMap, mask: Optional[Array] = None, kind: str = "mse",
                project: Optional[Callable[[Array], Array]] = None,
                include_embeddings: bool = False) -> Array:
    """Mean over mapped layers of the distance registered as `kind` (mse, cosine, pkd, ...).

    `project` (e.g. `lambda h: proj.apply(proj_params, h)`) maps student width to teacher
    width when they differ; `include_embeddings` adds the embeddings-output pair (0, 0).
    """
    fn = DISTANCES[kind]
    pairs = [(s + 1, t + 1) for s, t in mapping]
    if include_embeddings:
        pairs = [(0, 0)] + pairs
    terms = []
    for s, t in pairs:
        h = student_states[s] if project is None else project(student_states[s])
        terms.append(fn(h, teacher_states[t], mask))
    return jnp.mean(jnp.stack(terms))


def attention_loss(student_attn: Sequence[Array], teacher_attn: Sequence[Array],
                   mapping: LayerMap, mask: Optional[Array] = None,
                   kind: str = "kl") -> Array:
    """Mean over mapped layers of `attention_kl` or `attention_mse`."""
    fn = {"kl": attention_kl, "mse": attention_mse}[kind]
    return jnp.mean(jnp.stack([fn(student_attn[s], teacher_attn[t], mask)
                               for s, t in mapping]))


class HiddenProjection(nn.Module):
    """Learned linear map from student width to teacher width (TinyBERT's W_h).

    One shared projection for all layers; instantiate several for per-layer maps. Its
    params are trained with the student but are not part of the exported model.
    """

    features: int
    kernel_init: Callable = nn.initializers.normal(stddev=0.02)

    @nn.compact
    def __call__(self, x: Array) -> Array:
        return nn.Dense(self.features, kernel_init=self.kernel_init, name="dense")(
            jnp.asarray(x, jnp.float32))
