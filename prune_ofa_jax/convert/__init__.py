"""HF PyTorch <-> Flax conversion and params-only checkpoints."""
