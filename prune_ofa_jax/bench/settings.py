"""The bench's own config (a ConfigDict, overridden as `--config.key=value`) and the model
it resolves to. Default: a 4-layer 256-wide BERT at batch 32, seq 128 (ENVIRONMENT.md's
"small" baseline), which keeps the whole bench under 10 minutes on 2 CPU cores."""

from __future__ import annotations

import ml_collections

from prune_ofa_jax.models import config as model_config_lib

# Bench-only aliases on top of models.config.by_name: (base name, overrides).
ALIASES = {
    "bert-small": ("bert-base-uncased", dict(num_layers=4, hidden_size=256, num_heads=4,
                                             intermediate_size=1024)),
}


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.suite = "all"               # all | kd (the reference all-token KD figures only) |
    #                               presets (the cost of each reference-preset choice) |
    #                               input (pre-training input: bench/input.py) |
    #                               inference (classifier latency: bench/inference.py) |
    #                               obs (second-order pruning's cost: bench/obs_bench.py)
    c.model = "bert-small"        # an alias above or a models.config name (minilm-l6, ...)
    c.overrides = ""              # extra ModelConfig fields: "num_layers=2,vocab_size=1000"
    c.dtype = "float32"           # compute dtype of the CPU figures
    c.batch_size = 32
    c.seq_len = 128
    c.max_predictions = 20        # masked positions per row (P)
    c.sparsity_target = 0.85
    c.fused_chunk = 32            # positions per chunk of the fused all-token KD
    c.warmup = 1                  # untimed steps per variant after compilation
    c.steps = 7                   # timed steps per variant (one per interleaved round)
    c.time_budget_s = 540.0       # fewer rounds (>= 3) if the whole bench would run longer
    c.pause_s = 0.05              # idle gap before each timed step (lets thread pools park)
    c.extras = True               # extra variants: full-vocab dense, gathered HF, mask update
    c.torch_threads = 0           # 0 = all cores
    c.fast_compile = False        # XLA -O0 (smoke test only: timings then mean little)
    c.compile_threads = 2         # variants compiled concurrently before any timing
    c.seed = 0
    c.accel_only = False          # only the GPU/TPU section (skip the CPU figures)
    c.inference = ml_collections.ConfigDict()  # --config.suite=inference (seq: c.seq_len)
    c.inference.models = "minilm-l6,bert-base-uncased"  # random init, 2 labels
    c.inference.ckpt = ""         # instead: a real cls model (params dir or .pofa)
    c.inference.batch_sizes = (1, 32)
    c.inference.sparsity = 0.8    # the sparse variants' unstructured sparsity
    c.inference.budget_s_per_batch = 60.0  # timed rounds per model and batch size
    c.inference.min_rounds = 5
    c.inference.max_rounds = 40
    c.inference.threads = 0       # intra-op threads of every runtime (0 = all cores)
    c.inference.warmup = 2        # untimed calls per variant and batch size
    c.accel = ml_collections.ConfigDict()   # GPU/TPU section (skipped on CPU)
    c.accel.model = "bert-base-uncased"
    c.accel.overrides = ""        # as c.overrides, for the accelerator model
    c.accel.force = False         # run the section on any backend (smoke test on CPU)
    c.accel.peak_flops = 0.0      # per device; 0 = from flops.PEAK_BF16 by device kind
    c.accel.dtype = "bfloat16"
    c.accel.batch_size = 256      # per device
    c.accel.seq_len = 128
    c.accel.max_predictions = 20
    c.accel.warmup = 3
    c.accel.steps = 10
    c.obs = ml_collections.ConfigDict()     # suite=obs (bench/obs_bench.py)
    c.obs.block_size = 50         # the reference's Fisher block
    c.obs.num_grads = 16          # gradients per Fisher (at least every timed step's)
    c.obs.damp = 0.01             # relative (sparsity/obs_block.py)
    c.input = ml_collections.ConfigDict()   # suite=input (bench/input.py)
    c.input.small_tokens = 20e6   # synthetic prepared corpora for time-to-first-batch
    c.input.large_tokens = 200e6
    c.input.batch_size = 256
    c.input.worker_count = 2      # Grain worker processes
    c.input.warmup_batches = 5
    c.input.batches = 40          # timed batches per throughput figure
    c.input.overlap_steps = 30
    c.input.overlap_factor = 1.0  # emulated device time T = factor x input time per batch
    c.input.min_step_s = 0.02
    c.input.tmp_dir = ""          # "" = the system temp dir (needs ~2 GB)
    return c


def parse_overrides(text: str) -> dict:
    """"a=1,b=x" -> {"a": 1, "b": "x"} (ints and floats converted)."""
    out = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"config.overrides: expected key=value, got {item!r}")
        for cast in (int, float):
            try:
                value = cast(value)
                break
            except ValueError:
                continue
        out[key.strip()] = value
    return out


def resolve_model(name: str, overrides: str = "") -> tuple[str, dict]:
    """(models.config name, overrides) for a bench model name; validated by building it."""
    base, extra = ALIASES.get(name, (name, {}))
    extra = {**extra, **parse_overrides(overrides)}
    model_config_lib.by_name(base, **extra)
    return base, extra


def model_config(name: str, overrides: str = "", dtype: str = "float32"):
    base, extra = resolve_model(name, overrides)
    return model_config_lib.by_name(base, **extra, dtype=dtype)
