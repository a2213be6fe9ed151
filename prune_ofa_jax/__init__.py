"""prune_ofa_jax: Prune Once for All (sparse pre-trained transformers) in JAX/Flax.

Importing the package sets the Hugging Face libraries offline (models, tokenizers and data
come from local directories only; nothing is downloaded at run time) unless the environment
says otherwise, before any of them is imported. Tokenizers run single-threaded in each
process: the input pipeline parallelises over Grain workers instead.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

__version__ = "0.1.0"
