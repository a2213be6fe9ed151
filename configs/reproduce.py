"""The Prune OFA study (prune_ofa_jax/study/reproduce.py; its page: docs/studies/reproduce.md):

  python -m prune_ofa_jax.study reproduce --config configs/reproduce.py --workdir runs/reproduce
Args: "" (the study on its page: 5 seeds, SST-2 and tweets, about 175 CPU-minutes, sized from
a pilot to 90-120 min on an idle 2-core machine) or "test" (a few steps per run: the suite's). The decision rules, stated before the runs, are
`reproduce.RULES`: R1 Prune OFA >= task GMP - 1 point of dev accuracy (per task); R2 KD
upstream > no-KD upstream on held-out masked-LM accuracy (WikiText-2 test); R3 Prune OFA >
upstream GMP without KD (per task); each on the 95 % t interval of the paired difference.
"""

from prune_ofa_jax.study import reproduce


def get_config(arg: str = ""):
    return reproduce.get_config(arg)
