"""prune_ofa_jax: Prune Once for All (sparse pre-trained transformers) in JAX/Flax."""

__version__ = "0.1.0"
