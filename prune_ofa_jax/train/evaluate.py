"""Evaluation per task: masked-LM loss/accuracy on held-out batches, GLUE metrics on the dev
set, SQuAD EM/F1 after post-processing. The forward is the jitted `eval_step`."""

from __future__ import annotations

import numpy as np

from prune_ofa_jax.parallel import mesh as mesh_lib
from prune_ofa_jax.train import objectives


def _forward(run, state, batch, also=(), model_keys=None):
    """Eval outputs of the global batch on the host (all processes' rows, in global order),
    and the batch's `also` keys gathered the same way. The forward sees the batch's
    `model_keys` (default: all of it)."""
    if model_keys is not None:
        batch = {k: v for k, v in batch.items() if k in model_keys or k in also}
    batch = mesh_lib.global_batch(batch, run.mesh, accum=None)
    inputs = {k: v for k, v in batch.items() if model_keys is None or k in model_keys}
    out = run.eval_fn(state.params, state.masks, state.quant_stats, inputs)
    if also:
        return mesh_lib.to_host((out, {k: batch[k] for k in also}))
    return mesh_lib.to_host(out)


def mlm_eval(run, state, source, num_batches: int) -> dict:
    """Masked-LM cross-entropy and accuracy over the masked positions of held-out batches."""
    nll = correct = count = 0.0
    for i in range(num_batches):
        out, batch = _forward(run, state, source.batch(i),
                              also=("masked_lm_ids", "masked_lm_weights"))
        logits = out["mlm_logits"].astype(np.float64)
        labels, w = batch["masked_lm_ids"], batch["masked_lm_weights"]
        logz = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
        picked = np.take_along_axis(logits, labels[..., None], -1)[..., 0]
        nll += float(((logz - picked) * w).sum())
        correct += float(((logits.argmax(-1) == labels) * w).sum())
        count += float(w.sum())
    count = max(count, 1.0)
    return {"eval_mlm_loss": nll / count, "eval_mlm_accuracy": correct / count}


def predict(run, state, eval_set, batch_size: int) -> dict:
    """Concatenated outputs over every eval row, in order (padding rows dropped). Multi-host:
    each process feeds its rows of a global batch; the outputs and the rows' weights come
    back whole on every process, so every host filters the same global rows."""
    chunks: dict = {}
    for batch in eval_set.eval_batches(batch_size):
        out, gathered = _forward(run, state, batch, also=("weights",), model_keys=_MODEL_KEYS)
        keep = np.asarray(gathered["weights"]) > 0
        for k, v in out.items():
            chunks.setdefault(k, []).append(np.asarray(v)[keep])
    return {k: np.concatenate(v) for k, v in chunks.items()}


_MODEL_KEYS = ("input_ids", "attention_mask", "token_type_ids")


def evaluate(run, state, data) -> dict:
    task = run.config.task
    if task in objectives.MLM_TASKS:
        return mlm_eval(run, state, data.eval, run.config.data.eval_batches)
    return data.metrics(predict(run, state, data.eval, run.config.train.eval_batch_size))
