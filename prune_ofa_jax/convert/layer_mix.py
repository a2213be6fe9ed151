"""Export of a classifier with Adapting by Pruning's layer-mix head (models/heads.py), which no
Hugging Face class has.

The export is the family's base model (BertModel / RobertaModel / DistilBertModel: the
encoder with its zeros, reloadable by `transformers.AutoModel`) plus the head in
`layer_mix_head.safetensors` (torch layout) and `layer_mix_head.json`. `TorchHead` rebuilds
the head in PyTorch: logits = head(model(..., output_hidden_states=True).hidden_states),
the same numbers as our Flax model (tests/test_mask_method_runs.py checks it).
"""

from __future__ import annotations

import json
import pathlib

import jax
import numpy as np

HEAD_WEIGHTS = "layer_mix_head.safetensors"
HEAD_CONFIG = "layer_mix_head.json"


def head_state_dict(head: dict) -> dict:
    """Flax classifier params -> torch-layout float32 numpy tensors."""
    get = lambda x: np.asarray(jax.device_get(x), np.float32)  # noqa: E731
    return {"layer_weights": get(head["layer_weights"]),
            "dense.weight": get(head["dense"]["kernel"]).T.copy(),
            "dense.bias": get(head["dense"]["bias"]),
            "out_proj.weight": get(head["out_proj"]["kernel"]).T.copy(),
            "out_proj.bias": get(head["out_proj"]["bias"])}


def has_head(params) -> bool:
    return "classifier" in params and "layer_weights" in params["classifier"]


def write_head(out: pathlib.Path, head: dict, model_config) -> None:
    """The head's two files beside an exported base model (convert/hf.py writes that)."""
    import safetensors.numpy  # pylint: disable=import-outside-toplevel
    safetensors.numpy.save_file(head_state_dict(head), str(out / HEAD_WEIGHTS))
    (out / HEAD_CONFIG).write_text(json.dumps({
        "head": "layer_mix", "num_layers": model_config.num_layers,
        "hidden_size": model_config.hidden_size, "num_labels": model_config.num_labels,
        "pool": "mean" if model_config.cls_head == "layer_mix_mean" else "cls",
        "mix": "softmax(layer_weights)-weighted mean over hidden_states[1:] of the pooled "
               "vector ([CLS], or the mean over non-padding tokens)",
        "mlp": "dense -> tanh -> out_proj"}, indent=2))


class TorchHead:
    """The exported head in PyTorch: `TorchHead(hf_dir)(hidden_states, attention_mask)`."""

    def __init__(self, hf_dir):
        import safetensors.torch  # pylint: disable=import-outside-toplevel
        hf_dir = pathlib.Path(hf_dir)
        self.w = safetensors.torch.load_file(str(hf_dir / HEAD_WEIGHTS))
        self.pool = json.loads((hf_dir / HEAD_CONFIG).read_text())["pool"]

    def __call__(self, hidden_states, attention_mask=None):
        import torch  # pylint: disable=import-outside-toplevel
        hs = torch.stack(list(hidden_states[1:]))                         # [L, B, T, H]
        if self.pool == "mean":
            m = (torch.ones(hs.shape[1:3]) if attention_mask is None
                 else attention_mask.float())
            pooled = torch.einsum("lbth,bt->lbh", hs, m) / m.sum(-1).clamp(min=1)[None, :, None]
        else:
            pooled = hs[:, :, 0]
        x = torch.einsum("l,lbh->bh", torch.softmax(self.w["layer_weights"], 0), pooled)
        x = torch.tanh(x @ self.w["dense.weight"].T + self.w["dense.bias"])
        return x @ self.w["out_proj.weight"].T + self.w["out_proj.bias"]
