"""What a run distils beyond the logits, read once from `config.distill` into a hashable
`Spec` the train step carries (StepConfig.distill), and its checks (each error names the key).

  --config.distill.logit_loss=kl|soft_ce|mse                (losses.LOGIT_LOSSES)
  --config.distill.intermediate=mi_alpha|infonce|nwj|tuba   (mi.BOUNDS, with a critic)
                               |mse|cosine|pkd              (intermediate.DISTANCES; "" = none)
  --config.distill.intermediate_weight=1.0 --config.distill.mi_alpha=0.9
  --config.distill.layer_map=skip|last|emd --config.distill.attention_weight=0.0
  --config.distill.critic=mlp|encoder (critic_hidden, critic_dim, critic_lr_scale)

The names come from the registries (a new logit loss, bound or distance registers itself
where it is defined and is then accepted here), and each entry's own check runs when the
config selects it.
"""

from __future__ import annotations

import dataclasses

from prune_ofa_jax import errors
from prune_ofa_jax.distill import intermediate, losses, mi

LAYER_MAPS = ("skip", "last", "emd")
CRITICS = ("mlp", "encoder")


def intermediate_names() -> tuple:
    """Every name `distill.intermediate` accepts now: the MI bounds, then the distances."""
    return mi.BOUNDS.names() + intermediate.DISTANCES.names()


# The built-in intermediate objectives, as registered at import (the KD search's space).
INTERMEDIATE = intermediate_names()


@dataclasses.dataclass(frozen=True)
class Spec:
    """logit_loss: KD on the logits (kl: T^2 KL, soft_ce: T^2 cross-entropy to the teacher's
    soft labels, same gradient as kl; mse: MSE between logits); intermediate: the hidden-state
    objective ("" = none) weighted by intermediate_weight, over the layer_map pairs;
    attention_weight: attention-map KL over the one-to-one map (skip for emd)."""
    logit_loss: str = "kl"
    intermediate: str = ""
    intermediate_weight: float = 1.0
    mi_alpha: float = 0.9
    layer_map: str = "skip"
    attention_weight: float = 0.0
    critic: str = "mlp"
    critic_hidden: int = 256
    critic_dim: int = 64

    @classmethod
    def from_config(cls, c) -> "Spec":
        d = c.distill
        return cls(logit_loss=d.logit_loss, intermediate=d.intermediate,
                   intermediate_weight=float(d.intermediate_weight), mi_alpha=float(d.mi_alpha),
                   layer_map=d.layer_map, attention_weight=float(d.attention_weight),
                   critic=d.critic, critic_hidden=int(d.critic_hidden),
                   critic_dim=int(d.critic_dim))

    @property
    def is_mi(self) -> bool:
        return self.intermediate in mi.BOUNDS

    @property
    def hidden(self) -> bool:
        """The models must return their hidden states."""
        return bool(self.intermediate) and self.intermediate_weight > 0

    @property
    def attentions(self) -> bool:
        return self.attention_weight > 0


def _fail(key: str, msg: str):
    raise errors.ConfigError(f"config.{key}: {msg}")


def check(c) -> None:
    """Config errors before anything compiles."""
    d = c.distill
    losses.LOGIT_LOSSES.check(c, d.logit_loss)  # a registered name and its own check
    if d.intermediate in mi.BOUNDS:
        mi.BOUNDS.check(c, d.intermediate)
    elif d.intermediate in intermediate.DISTANCES:
        intermediate.DISTANCES.check(c, d.intermediate)
    elif d.intermediate:
        _fail("distill.intermediate", f"{d.intermediate!r} is not one of "
              f"{intermediate_names()} (or \"\" for none)")
    if d.layer_map not in LAYER_MAPS:
        _fail("distill.layer_map", f"{d.layer_map!r} is not one of {LAYER_MAPS}")
    if d.critic not in CRITICS:
        _fail("distill.critic", f"{d.critic!r} is not one of {CRITICS}")
    if d.intermediate_weight < 0 or d.attention_weight < 0:
        _fail("distill.intermediate_weight", "intermediate and attention weights must be >= 0")
    if d.critic_hidden < 1 or d.critic_dim < 1 or d.critic_lr_scale <= 0:
        _fail("distill.critic_hidden", "critic_hidden, critic_dim must be >= 1 and "
              "critic_lr_scale > 0")
    wants_teacher = (d.intermediate and d.intermediate_weight > 0) or d.attention_weight > 0
    if wants_teacher and not d.kd_weight > 0:
        _fail("distill.kd_weight", "intermediate/attention distillation runs with the teacher, "
              "which a run loads when distill.kd_weight > 0: set distill.kd_weight (e.g. 0.5) "
              "and teacher.path")
