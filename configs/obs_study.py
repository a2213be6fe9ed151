"""The OBS (Optimal BERT Surgeon) study (prune_ofa_jax/study/obs_study.py):

  python -m prune_ofa_jax.study obs --config configs/obs_study.py --workdir runs/obs --doc
Args: "" (the study measured on docs/studies/obs.md) or "test" (seconds: the suite's).
"""

from prune_ofa_jax.study import obs_study


def get_config(arg: str = ""):
    return obs_study.get_config(arg)
