"""Sparsity for any params pytree: masks, magnitude pruning, patterns, schedules.

- `masks`: mask trees (bool / None), `init_masks`, `magnitude_masks`, `apply_masks`,
  `masked_forward_params`, `masks_from_nonzero`, `sparsity_stats`, `sparsity_report`.
- `patterns`: unstructured, N:M along the input dim, 1xK blocks.
- `schedules`: `CubicSchedule` (Zhu-Gupta), `OneShot`, `Constant` on a traced step.
- `exact_topk`: the exact-count, sort-free selection behind `magnitude_masks`.
"""
