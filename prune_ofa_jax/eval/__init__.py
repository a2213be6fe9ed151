"""Evaluation metrics: GLUE (`glue_metrics`) and SQuAD v1.1 EM/F1 (`squad_metrics`)."""
