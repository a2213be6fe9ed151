"""Knowledge distillation: logit KD, task losses and intermediate-representation terms."""
