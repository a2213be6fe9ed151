"""`--config.preset=reference|fast`: one switch for the settings where the official IntelLabs
PyTorch scripts (research/prune-once-for-all) and a faster variant differ.

The keys a preset controls are None in `config_base.base()` ("from the preset").
`resolve(config)` returns a copy with every None filled from the table below, so a value set
explicitly, by a recipe or on the command line, always wins over the preset. `loop.run` calls
it once before validation; `build.build` calls it too (a no-op on a resolved config).

- "reference": the official scripts (KD on every token, dense latent weights with masks in the
  forward, 512-token upstream, Adam eps 1e-8, Q8BERT-style QAT).
- "fast": the same, but KD at the masked positions only, hard-zero pruning, 128 tokens.
- "" (none): config_base's own defaults (teacher_prep, the demo).

`resolve_steps(config, sources)` turns `train.epochs` into `train.steps` once the data is
built (the LR schedule needs the total), and `optim.warmup_fraction` into warmup steps.
"""

from __future__ import annotations

import copy
import math

from prune_ofa_jax import errors

REFERENCE, FAST, NONE = "reference", "fast", ""
MLM_TASKS = ("pretraining", "mlm")

# Layers the reference Q8BERT setup leaves un-requantised (HF names attention.output.dense,
# attention.self.value, classifier): their outputs feed a residual sum, the attention
# context or the loss in float. `classifier/out_proj` is the logits layer of the two-layer
# (RoBERTa/DistilBERT) heads, so it counts as "classifier" too.
REFERENCE_NO_REQUANT = (r"attention/output$", r"attention/value$", r"^classifier(/out_proj)?$")

_PAPER = {  # rows shared by reference and fast
    "optim.eps": 1e-8,                     # the HF Trainer / torch AdamW default
    "quant.ema_decay": 0.99,               # Q8BERT's EMA averaging constant 0.01
    "quant.requantize_output": True,       # every Linear output, after its bias, ...
    "quant.requantize_after_bias": True,
    "quant.requantize_exclude": REFERENCE_NO_REQUANT,  # ... but these
}
TABLE = {
    REFERENCE: {**_PAPER, "distill.mlm_positions_only": False, "sparsity.regrow": True},
    FAST: {**_PAPER, "distill.mlm_positions_only": True, "sparsity.regrow": False},
    NONE: {"optim.eps": 1e-6, "quant.ema_decay": 0.9999, "quant.requantize_output": False,
           "quant.requantize_after_bias": False, "quant.requantize_exclude": (),
           "distill.mlm_positions_only": True, "sparsity.regrow": False},
}
UPSTREAM_SEQ_LEN = {REFERENCE: 512, FAST: 128, NONE: 128}  # MLM tasks; others get 128
DEFAULT_SEQ_LEN = 128
MASK_RATE = 0.15          # BERT masks 15 % of the tokens
MIN_MASK_RATE = 0.10      # an explicit max_predictions below this silently masks less
LEGACY_MAX_PREDICTIONS = 20  # preset "": a fixed number of masked positions per sequence
KD_WITH_TEACHER = 0.5     # paper presets: 0.5 * task + 0.5 * T^2 KL when teacher.path is set


def check_name(name: str) -> None:
    if name not in TABLE:
        raise errors.ConfigError(f"config.preset: {name!r} is not one of "
                          f"{sorted(k for k in TABLE if k)} (or '' for none)")


def check_warmup(c) -> None:
    if not 0 <= c.optim.warmup_steps < c.train.steps:
        raise errors.ConfigError(f"config.optim.warmup_steps: {c.optim.warmup_steps} must be "
                                 f"in [0, train.steps={c.train.steps})")


def _get(c, dotted: str):
    node = c
    for part in dotted.split("."):
        node = node[part]
    return node


def _fill(c, dotted: str, value) -> None:
    """Set `dotted` to `value` only where it is None (not set explicitly)."""
    *head, last = dotted.split(".")
    node = _get(c, ".".join(head))
    if node[last] is None:
        node[last] = value


def max_predictions(preset: str, seq_len: int) -> int:
    """The masked positions per sequence when data.max_predictions is unset."""
    if preset == NONE:
        return LEGACY_MAX_PREDICTIONS
    return max(1, round(MASK_RATE * seq_len))


def _check_max_predictions(c, explicit: bool) -> None:
    """An explicit max_predictions under 10 % of seq_len caps the 15 % masking silently."""
    n, seq_len = c.data.max_predictions, c.data.seq_len
    if explicit and c.task in MLM_TASKS and n < MIN_MASK_RATE * seq_len:
        fix = max(1, round(MASK_RATE * seq_len))
        raise errors.ConfigError(
            f"config.data.max_predictions: {n} masks under {MIN_MASK_RATE:.0%} of "
            f"data.seq_len={seq_len} tokens; set data.max_predictions={fix} or leave it unset "
            f"({MASK_RATE:.0%} of seq_len)")


def resolve(config):
    """A copy of `config` with every preset key that is None filled from config.preset."""
    check_name(config.preset)
    c = copy.deepcopy(config)
    for key, value in TABLE[c.preset].items():
        _fill(c, key, value)
    mlm = c.task in MLM_TASKS
    _fill(c, "data.seq_len", UPSTREAM_SEQ_LEN[c.preset] if mlm else DEFAULT_SEQ_LEN)
    explicit = c.data.max_predictions is not None
    _fill(c, "data.max_predictions", max_predictions(c.preset, c.data.seq_len))
    _check_max_predictions(c, explicit)
    # The paper distils downstream too, whenever a task teacher is given. STS-B (regression)
    # distils with MSE: the reference's KL over a single logit is identically zero.
    kd = KD_WITH_TEACHER if c.preset != NONE and c.teacher.path else 0.0
    _fill(c, "distill.kd_weight", kd)
    return c


def is_resolved(config) -> bool:
    keys = (*TABLE[NONE], "data.seq_len", "data.max_predictions", "distill.kd_weight")
    return all(_get(config, k) is not None for k in keys)


def resolve_steps(config, sources=None):
    """A copy with train.steps = train.epochs * the train source's steps_per_epoch (when
    epochs > 0), and optim.warmup_steps = warmup_fraction * steps (when the fraction is > 0
    and warmup_steps is 0). Without `sources`, epochs are left alone (train.steps as given)."""
    c = copy.deepcopy(config)
    if c.train.epochs > 0 and sources is not None:
        per_epoch = getattr(sources.train, "steps_per_epoch", None)
        if not isinstance(per_epoch, int) or per_epoch <= 0:
            raise errors.ConfigError(
                f"config.train.epochs: the {c.data.kind} train source has no epochs; set "
                "train.epochs=0 and train.steps")
        c.train.steps = c.train.epochs * per_epoch
    if c.optim.warmup_fraction > 0 and c.optim.warmup_steps == 0:
        c.optim.warmup_steps = int(math.floor(c.optim.warmup_fraction * c.train.steps))
    check_warmup(c)
    return c
