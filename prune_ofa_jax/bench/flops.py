"""Model FLOPs of a step (matmuls only: 2 per multiply-add) and MFU.

Per token and layer, the forward of an encoder layer costs 2*(4H^2 + 2HI) in its dense
layers (= 2*N_layer) plus 4*L*H in attention (QK^T and PV). The MLM head costs
2*(H^2 + H*V) per projected row: every token, or only the P masked positions with
mlm_positions_only. Training the student costs 3x its forward (backward = 2x), the frozen
teacher 1x: 6*N*tokens + 2*N*tokens + attention, as usual.
"""

from __future__ import annotations

from typing import Optional

# Peak dense bf16 matmul FLOP/s per device, matched as lower-case substrings of
# jax.Device.device_kind (first match wins, so the more specific keys come first).
PEAK_BF16 = (
    ("h200", 989e12),
    ("h100", 989e12),
    ("a100", 312e12),
    ("v5 lite", 197e12),
    ("v5e", 197e12),
    ("v5p", 459e12),
    ("v4", 275e12),
)


def peak_flops(device_kind: str) -> Optional[float]:
    kind = device_kind.lower()
    for key, peak in PEAK_BF16:
        if key in kind:
            return peak
    return None


def forward_flops(mcfg, batch: int, seq_len: int, predictions: int, task: str = "pretraining",
                  positions_only: bool = True) -> dict:
    """Forward matmul FLOPs of one batch, by part."""
    h, i, v, n = mcfg.hidden_size, mcfg.intermediate_size, mcfg.vocab_size, mcfg.num_layers
    tokens = batch * seq_len
    dense = 2 * tokens * n * (4 * h * h + 2 * h * i)
    attention = 2 * tokens * n * (2 * seq_len * h)
    rows = batch * (predictions if positions_only else seq_len)
    mlm = 2 * rows * (h * h + h * v) if task in ("mlm", "pretraining") else 0
    nsp = 2 * batch * (h * h + 2 * h) if task == "pretraining" else 0
    return {"encoder_dense": dense, "attention": attention, "mlm_head": mlm,
            "pooler_nsp": nsp, "total": dense + attention + mlm + nsp}


def train_step_flops(mcfg, batch: int, seq_len: int, predictions: int, task: str,
                     positions_only: bool, teacher: bool) -> dict:
    """Student fwd+bwd (3x forward) + frozen teacher forward (1x, same shape)."""
    fwd = forward_flops(mcfg, batch, seq_len, predictions, task, positions_only)["total"]
    student, t = 3 * fwd, (fwd if teacher else 0)
    return {"student": student, "teacher": t, "total": student + t}


def mfu(flops_per_step: float, step_s: float, peak_per_device: float, devices: int) -> float:
    return flops_per_step / step_s / (peak_per_device * devices)
