"""Speed benchmarks: every figure is a ratio of two steps timed side by side in one run.

`python -m prune_ofa_jax.bench [--config.model=minilm-l6] [--workdir DIR]` (see __main__.py).
Modules: settings (the bench config), variants (the jitted steps, built by train.build),
torch_hf (the Hugging Face PyTorch reference step), timing (interleaved rounds, medians),
flops (FLOP counts, peak table, MFU), accel (the GPU/TPU section), machine (versions),
core (figures, JSON, table).
"""
