"""Evolutionary search under a latency budget (AutoTinyBERT's "Evolved" method).

Candidates: the archs of the space whose predicted latency lies in
[window_lo, window_hi] x (teacher latency / speedup). The first generation is `generation`
random candidates; every later one is `explore` new random candidates and the rest mutations
of parents drawn by roulette (fitness minus the worst, as theirs) among the top `parents`
archs evaluated so far; a mutation is redrawn until it lands in the window and is new
(after `MAX_TRIES` draws a random candidate takes its place). The search stops when
`budget` archs are evaluated; the best one is returned.

Fitness values go through `cache` (arch -> result dict), which the pipeline keeps in a file,
so a rerun of an interrupted search replays the same draws and re-evaluates nothing.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import numpy as np

from prune_ofa_jax.nas import space as space_lib

MAX_TRIES = 200


@dataclasses.dataclass(frozen=True)
class Window:
    lo: float
    hi: float

    @classmethod
    def for_speedup(cls, teacher_ms: float, speedup: float, window) -> "Window":
        target = teacher_ms / speedup
        return cls(window[0] * target, window[1] * target)

    def __contains__(self, ms: float) -> bool:
        return self.lo <= ms <= self.hi


def candidates(space: space_lib.Space, predict_ms: Callable, window: Window) -> list:
    """Every arch of the grid whose predicted latency is inside the window."""
    archs = space.all()
    ms = predict_ms(archs)
    return [a for a, m in zip(archs, ms) if m in window]


def roulette(parents: list, scores: list, rng: np.random.Generator):
    low = min(scores)
    weights = np.array([s - low for s in scores], np.float64)
    if weights.sum() <= 0:
        return parents[int(rng.integers(len(parents)))]
    return parents[int(rng.choice(len(parents), p=weights / weights.sum()))]


def _mutant(space, parent, predict_one, window, taken, prob, rng) -> Optional[space_lib.Arch]:
    for _ in range(MAX_TRIES):
        child = space.mutate(parent, rng, prob)
        if child not in taken and predict_one(child) in window:
            return child
    return None


def next_generation(space, pool: list, evaluated: dict, predict_one: Callable,
                    window: Window, s_cfg, rng: np.random.Generator) -> list:
    """One generation of new archs (all in the window, none evaluated before)."""
    fresh = [a for a in pool if a not in evaluated]
    ranked = sorted(evaluated, key=lambda a: evaluated[a], reverse=True)[:s_cfg.parents]
    gen, taken = [], set(evaluated)
    while len(gen) < s_cfg.generation and len(taken) < len(pool):
        child = None
        if ranked and rng.random() >= s_cfg.explore:
            parent = roulette(ranked, [evaluated[a] for a in ranked], rng)
            child = _mutant(space, parent, predict_one, window, taken, s_cfg.mutation_prob,
                            rng)
        if child is None:
            fresh = [a for a in fresh if a not in taken]
            if not fresh:
                break
            child = fresh[int(rng.integers(len(fresh)))]
        gen.append(child)
        taken.add(child)
    return gen


def evolve(space, pool: list, predict_one: Callable, window: Window, fitness: Callable,
           s_cfg, seed: int, cache: dict, say=print) -> dict:
    """Runs the search; returns {"best", "evaluated": [(arch, result)...], "generations"}."""
    if not pool:
        raise ValueError(f"no arch of the space has a predicted latency in [{window.lo:.3g}, "
                         f"{window.hi:.3g}] ms; widen config.nas.search.window or the space")
    rng = np.random.default_rng([seed, 23])
    evaluated, history, gen_no = {}, [], 0
    while len(evaluated) < s_cfg.budget and len(evaluated) < len(pool):
        gen = next_generation(space, pool, evaluated, predict_one, window, s_cfg, rng)
        if not gen:
            break
        gen_no += 1
        for arch in gen[:s_cfg.budget - len(evaluated)]:
            if arch not in cache:
                cache[arch] = fitness(arch)
            evaluated[arch] = cache[arch]["fitness"]
            history.append((arch, cache[arch]))
            say(f"gen {gen_no} eval {len(evaluated)}/{s_cfg.budget} {arch.key()}: fitness "
                f"{cache[arch]['fitness']:.4f}")
    best = max(evaluated, key=lambda a: evaluated[a])
    return {"best": best, "evaluated": history, "generations": gen_no}
