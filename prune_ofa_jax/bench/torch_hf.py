"""The reference: a Hugging Face PyTorch `BertForMaskedLM` train step, same config and batch.

Both sides compute the same math: forward with dropout, MLM cross-entropy at the masked
positions only (masked_lm_weights), backward, global-norm clip at 1.0, AdamW (decoupled
decay on kernels/embeddings only, as train/optim.py). "full": the stock model projects
every position onto the vocabulary (HF's behaviour, and ours with
mlm_positions_only=False); "gathered": encoder -> hidden at masked positions -> MLM head
(the same trick as ours with mlm_positions_only=True).
"""

from __future__ import annotations

import os
from typing import Callable

import numpy as np


def _optimizer(torch, model, optim_cfg):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": optim_cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    kw = dict(lr=optim_cfg.lr, betas=(optim_cfg.b1, optim_cfg.b2), eps=optim_cfg.eps)
    try:
        return torch.optim.AdamW(groups, fused=True, **kw), "fused"
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, foreach=True, **kw), "foreach"


def make_steps(model_config, local_batch: dict, optim_cfg, threads: int = 0,
               gathered: bool = True, seed: int = 0) -> tuple[dict[str, Callable], dict]:
    """{"torch_full": fn, ["torch_gathered": fn]} each running one blocking train step,
    and info (threads, attention implementation, optimizer implementation)."""
    import torch  # pylint: disable=import-outside-toplevel
    import transformers  # pylint: disable=import-outside-toplevel

    torch.set_num_threads(threads or os.cpu_count())
    torch.manual_seed(seed)
    autocast = model_config.dtype == "bfloat16"
    b = {k: torch.from_numpy(np.asarray(v)) for k, v in local_batch.items()}
    inputs = dict(input_ids=b["input_ids"].long(), attention_mask=b["attention_mask"].long(),
                  token_type_ids=b["token_type_ids"].long())
    positions, labels = b["masked_lm_positions"].long(), b["masked_lm_ids"].long()
    weights = b["masked_lm_weights"].float()

    def masked_xent(logits_at_positions):
        nll = torch.nn.functional.cross_entropy(
            logits_at_positions.float().flatten(0, 1), labels.flatten(), reduction="none")
        return (nll * weights.flatten()).sum() / weights.sum()

    def make(kind):
        model = transformers.BertForMaskedLM(model_config.to_hf())
        model.train()
        opt, opt_impl = _optimizer(torch, model, optim_cfg)
        hidden_size = model_config.hidden_size

        def loss_fn():
            if kind == "full":
                logits = model(**inputs).logits
                picked = torch.gather(logits, 1, positions[..., None].expand(
                    -1, -1, logits.shape[-1]))
            else:
                hidden = model.bert(**inputs).last_hidden_state
                picked = model.cls(torch.gather(hidden, 1, positions[..., None].expand(
                    -1, -1, hidden_size)))
            return masked_xent(picked)

        def step():
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                loss = loss_fn()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step.loss = float(loss.detach())
        step.loss = float("nan")
        return step, model.config._attn_implementation, opt_impl  # pylint: disable=protected-access

    steps, info = {}, {}
    for kind in ("full", "gathered") if gathered else ("full",):
        fn, attn, opt_impl = make(kind)
        steps[f"torch_{kind}"] = fn
        info = {"threads": torch.get_num_threads(), "attn_implementation": attn,
                "adamw": opt_impl, "autocast_bf16": autocast}
    return steps, info
