"""The architecture space of the AutoTinyBERT supernet (KD setting): sub-models are prefixes.

An `Arch` is (layers, hidden, ffn, qkv): the first `layers` layers; the first `hidden` dims of
the embeddings, LayerNorms and every Linear; the first `ffn` FFN neurons; 12 heads, each cut to
its first qkv/12 dims. All layers of a sub-model share one shape.

`Space` is the grid the sampler and the search draw from (range + step per dimension, qkv at
most hidden: a plain Hugging Face BERT has attention width == hidden, see nas/extract.py).
`Buckets` are the compiled shapes of the supernet step: an arch runs in the smallest bucket
that holds it, its own widths masked inside (nas/elastic.py), so the step compiles once per
bucket, not once per arch.

Everything here is numpy and pure: `sample_for_step(space, seed, step)` is a function of its
arguments only, so every host of a multi-host job draws the same arch at the same step.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from typing import Optional

import numpy as np

DIMS = ("layers", "hidden", "ffn", "qkv")


@dataclasses.dataclass(frozen=True, order=True)
class Arch:
    layers: int
    hidden: int
    ffn: int
    qkv: int

    def to_dict(self) -> dict:
        return {k: int(getattr(self, k)) for k in DIMS}

    @classmethod
    def from_dict(cls, d: dict) -> "Arch":
        missing, extra = set(DIMS) - set(d), set(d) - set(DIMS)
        if missing or extra:
            raise ValueError(f"arch needs exactly the keys {DIMS}; missing {sorted(missing)}, "
                             f"unknown {sorted(extra)}")
        return cls(**{k: int(d[k]) for k in DIMS})

    @classmethod
    def parse(cls, text: str) -> "Arch":
        """From JSON, e.g. '{"layers":3,"hidden":256,"ffn":512,"qkv":192}'."""
        return cls.from_dict(json.loads(text))

    def key(self) -> str:
        return f"L{self.layers}_H{self.hidden}_F{self.ffn}_Q{self.qkv}"

    def features(self) -> np.ndarray:
        """The latency predictor's inputs (theirs): d, L, mean FFN, mean qkv."""
        return np.array([self.hidden, self.layers, self.ffn, self.qkv], np.float64)

    def check_within(self, top: "Arch", num_heads: int, what: str = "arch") -> None:
        for k in DIMS:
            if not 1 <= getattr(self, k) <= getattr(top, k):
                raise ValueError(f"{what}: {k}={getattr(self, k)} is outside [1, "
                                 f"{getattr(top, k)}] (the supernet's size)")
        if self.qkv % num_heads:
            raise ValueError(f"{what}: qkv={self.qkv} is not a multiple of the {num_heads} "
                             "heads (each head keeps qkv/heads dims)")


def _grid(lo: int, hi: int, step: int, name: str) -> tuple:
    if not (0 < lo <= hi and step > 0):
        raise ValueError(f"config.nas.space.{name}: need 0 < min <= max and step > 0, got "
                         f"({lo}, {hi}, {step})")
    if (hi - lo) % step:
        raise ValueError(f"config.nas.space.{name}: max {hi} is not min {lo} + k * step {step}")
    return tuple(range(lo, hi + 1, step))


@dataclasses.dataclass(frozen=True)
class Space:
    """Allowed values per dimension (sorted); qkv <= hidden is enforced for every arch."""
    layers: tuple
    hidden: tuple
    ffn: tuple
    qkv: tuple
    num_heads: int = 12

    @classmethod
    def from_config(cls, s, num_heads: int = 12) -> "Space":
        """s: ConfigDict with (min, max, step) per dimension (config.nas.space)."""
        space = cls(*(_grid(*getattr(s, k), k) for k in DIMS), num_heads=num_heads)
        for q in space.qkv:
            if q % num_heads:
                raise ValueError(f"config.nas.space.qkv: {q} is not a multiple of {num_heads} "
                                 "heads; use a min and step that are")
        if space.qkv[0] > space.hidden[0]:
            raise ValueError("config.nas.space: the smallest qkv exceeds the smallest hidden; "
                             "every arch needs qkv <= hidden")
        return space

    def top(self) -> Arch:
        return Arch(self.layers[-1], self.hidden[-1], self.ffn[-1], self.qkv[-1])

    def contains(self, a: Arch) -> bool:
        return (a.layers in self.layers and a.hidden in self.hidden and a.ffn in self.ffn
                and a.qkv in self.qkv and a.qkv <= a.hidden)

    def qkv_for(self, hidden: int) -> tuple:
        return tuple(q for q in self.qkv if q <= hidden)

    def all(self) -> list:
        """Every arch of the grid (the candidate pool of the search)."""
        return [Arch(l, h, f, q) for l, h, f in itertools.product(self.layers, self.hidden,
                                                                  self.ffn)
                for q in self.qkv_for(h)]

    def sample(self, rng: np.random.Generator) -> Arch:
        """Uniform per dimension (qkv uniform among the values <= hidden), as theirs."""
        h = int(rng.choice(self.hidden))
        return Arch(int(rng.choice(self.layers)), h, int(rng.choice(self.ffn)),
                    int(rng.choice(self.qkv_for(h))))

    def mutate(self, a: Arch, rng: np.random.Generator, prob: float = 0.25) -> Arch:
        """Theirs (KD): layers +-1 (p), hidden +-1 step (2p), FFN +-2 steps (2p), qkv +-2 steps
        (p); a move off the grid keeps the old value. qkv is then clipped to <= hidden, so the
        result is always in the space."""
        def move(values, v, p, reach):
            i = values.index(v)
            if rng.random() < p:
                j = i + int(rng.integers(-reach, reach + 1))
                if 0 <= j < len(values):
                    return values[j]
            return v
        layers = move(self.layers, a.layers, prob, 1)
        hidden = move(self.hidden, a.hidden, 2 * prob, 1)
        ffn = move(self.ffn, a.ffn, 2 * prob, 2)
        qkv = move(self.qkv, a.qkv, prob, 2)
        qkv = min(qkv, self.qkv_for(hidden)[-1])
        return Arch(layers, hidden, ffn, qkv)


def sample_for_step(space: Space, seed: int, step: int) -> Arch:
    """The arch the supernet trains at `step`: a pure function of (space, seed, step)."""
    return space.sample(np.random.default_rng([int(seed), 0x5EED, int(step)]))


@dataclasses.dataclass(frozen=True)
class Buckets:
    """Compiled widths per dimension; the last of each equals the space's maximum. Depth is
    not bucketed: layers past an arch's depth are skipped at run time (nas/elastic.py)."""
    hidden: tuple
    ffn: tuple
    qkv: tuple
    layers: int

    @classmethod
    def from_config(cls, b, space: Space) -> "Buckets":
        top = space.top()
        out = {}
        for k in ("hidden", "ffn", "qkv"):
            vals = tuple(sorted(int(v) for v in getattr(b, k))) or (getattr(top, k),)
            if vals[-1] != getattr(top, k):
                raise ValueError(f"config.nas.buckets.{k}: the largest bucket {vals[-1]} must "
                                 f"equal the space's max {getattr(top, k)}")
            if k == "qkv" and any(v % space.num_heads for v in vals):
                raise ValueError(f"config.nas.buckets.qkv: {vals} must be multiples of "
                                 f"{space.num_heads}")
            out[k] = vals
        return cls(layers=top.layers, **out)

    def of(self, a: Arch) -> Arch:
        """The compiled shape an arch runs in (all layers; the smallest widths holding it)."""
        pick = lambda vals, v: next(b for b in vals if b >= v)
        return Arch(self.layers, pick(self.hidden, a.hidden), pick(self.ffn, a.ffn),
                    pick(self.qkv, a.qkv))

    def all(self, space: Optional[Space] = None) -> list:
        shapes = {self.of(a) for a in space.all()} if space is not None else {
            Arch(self.layers, h, f, q) for h in self.hidden for f in self.ffn for q in self.qkv}
        return sorted(shapes)
