"""AutoTinyBERT-style architecture search on our BERT family: an elastic one-shot supernet
(space, elastic, supernet), extraction to plain HF BERT (extract), a measured latency table and
its predictor (latency, predictor), evolutionary search with fine-tuned fitness (search,
fitness), and the end-to-end pipeline (pipeline, report; `python -m prune_ofa_jax.nas`)."""
