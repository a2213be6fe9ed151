"""Export trained models to Hugging Face PyTorch, reload them with `transformers` (no custom
code) and check that the reloaded model gives our logits and holds our zeros."""

from __future__ import annotations

import re

import jax
import numpy as np

from prune_ofa_jax.convert import hf as hf_convert
from prune_ofa_jax.convert import params_ckpt
from prune_ofa_jax.data import tokenization
from prune_ofa_jax.models import bert

_SENTENCES = ("a gripping , beautifully acted film .", "the plot is thin and the jokes fall flat .",
              "it 's not great , but it is n't bad either .")


def _zeros_fraction(state_dict, prunable_torch: str = r"encoder\.layer\.\d+\..*weight$") -> float:
    total = zeros = 0
    for name, t in state_dict.items():
        if re.search(prunable_torch, name) and t.ndim == 2:
            total += t.numel()
            zeros += int((t == 0).sum())
    return zeros / max(total, 1)


def export_and_check(stages: dict, out_root, p) -> dict:
    import torch  # pylint: disable=import-outside-toplevel
    import transformers  # pylint: disable=import-outside-toplevel
    tokenizer = tokenization.load_tokenizer(p.tokenizer or None)
    enc = tokenizer(list(_SENTENCES), padding="max_length", truncation=True,
                    max_length=p.seq_len, return_tensors="np")
    results = {}
    for name in ("3_finetune_dense", "3_finetune_sparse"):
        params, mcfg, task = params_ckpt.load_params(stages[name][1] / "model")
        out_dir = out_root / name
        hf_convert.export_hf(params, mcfg, task, out_dir)
        tokenizer.save_pretrained(str(out_dir))
        hf_model = transformers.AutoModelForSequenceClassification.from_pretrained(str(out_dir))
        hf_model.eval()
        with torch.no_grad():
            ref = hf_model(**{k: torch.as_tensor(v) for k, v in enc.items()}).logits.numpy()
        ours = bert.BertFamily(mcfg, task).apply(
            {"params": params}, enc["input_ids"], enc["attention_mask"],
            enc.get("token_type_ids"), deterministic=True)["logits"]
        results[name] = {"hf_dir": str(out_dir),
                         "max_abs_logit_diff": float(np.abs(np.asarray(jax.device_get(ours))
                                                            - ref).max()),
                         "export_sparsity": _zeros_fraction(hf_model.state_dict())}
    return results
