"""Sparsity patterns: what a unit of pruning is and how it is scored.

Flax kernels are [in, out]; structured patterns group entries along the INPUT axis (axis 0),
i.e. per output column, runs of consecutive input entries:

- `Unstructured()`: each weight is a unit, scored by |w| (float32).
- `NM(n, m)`: in every group of `m` consecutive input entries of an output column keep
  exactly the `n` largest |w| (2:4 = NVIDIA sparse tensor cores). The pattern fixes the
  sparsity at 1 - n/m, so the requested target's VALUE is ignored, with one exception:
  a target <= 0 (e.g. a schedule before its begin step) gives an all-True mask, so a
  OneShot/cubic schedule switches N:M on at its first update with target > 0. Configs can
  check a target with `NM.check_target` (ValueError on mismatch). Per-group by
  construction, so only method="uniform" applies.
- `Block(size, norm)`: 1 x size blocks of consecutive input entries (Intel's 1x4 setting),
  scored by block L2 (sum of squares; same order as the norm) or L1 norm; whole blocks are
  kept or zeroed and counts are exact in blocks: n_blocks - floor(s * n_blocks) kept.

`parse("unstructured" | "2:4" | "1x4" | "1x4:l1")` builds one from a config string.
"""

import dataclasses
import re
from typing import Union

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Unstructured:
    """Every weight is its own unit."""

    def validate(self, path: str, shape: tuple[int, ...]) -> None:
        del path, shape

    def scores(self, w: jax.Array) -> jax.Array:
        return jnp.abs(w.astype(jnp.float32))

    def expand(self, unit_mask: jax.Array, shape: tuple[int, ...]) -> jax.Array:
        del shape
        return unit_mask


def _check_2d(kind: str, path: str, shape: tuple[int, ...], size: int) -> None:
    if len(shape) != 2:
        raise ValueError(f"{kind} pattern needs a 2-D [in, out] kernel; {path} has shape {shape}")
    if shape[0] % size:
        raise ValueError(
            f"{kind}: input dim {shape[0]} of {path} (shape {shape}) is not divisible by {size}")


@dataclasses.dataclass(frozen=True)
class NM:
    """Keep exactly `n` of every `m` consecutive input entries per output column."""

    n: int
    m: int

    def __post_init__(self):
        if not (isinstance(self.n, int) and isinstance(self.m, int)):
            raise ValueError(f"N:M needs integers, got n={self.n!r}, m={self.m!r}")
        if self.m < 1 or self.n < 0:
            raise ValueError(f"N:M needs m >= 1 and n >= 0, got {self.n}:{self.m}")
        if self.n > self.m:
            raise ValueError(f"N:M needs N <= M, got N={self.n} > M={self.m}")

    @property
    def implied_sparsity(self) -> float:
        return 1.0 - self.n / self.m

    def check_target(self, target: float, tol: float = 1e-6) -> None:
        """Host-side: ValueError if a config's target disagrees with 1 - n/m."""
        if abs(target - self.implied_sparsity) > tol:
            raise ValueError(
                f"target sparsity {target} disagrees with {self.n}:{self.m} "
                f"(which is exactly {self.implied_sparsity})")

    def validate(self, path: str, shape: tuple[int, ...]) -> None:
        _check_2d(f"{self.n}:{self.m}", path, shape, self.m)

    def mask(self, w: jax.Array) -> jax.Array:
        """Exactly n kept per group (ties: lower input index first, as lax.top_k)."""
        d_in, d_out = w.shape
        groups = jnp.abs(w.astype(jnp.float32)).reshape(d_in // self.m, self.m, d_out)
        if self.n in (0, self.m):
            return jnp.full(w.shape, self.n == self.m)
        _, idx = jax.lax.top_k(jnp.swapaxes(groups, 1, 2), self.n)  # [G, out, n]
        onehot = jax.nn.one_hot(idx, self.m, dtype=jnp.int32).sum(axis=-2) > 0  # [G, out, m]
        return jnp.swapaxes(onehot, 1, 2).reshape(d_in, d_out)


@dataclasses.dataclass(frozen=True)
class Block:
    """1 x `size` blocks along the input dim, scored by block L2 or L1 norm."""

    size: int
    norm: str = "l2"

    def __post_init__(self):
        if not isinstance(self.size, int) or self.size < 1:
            raise ValueError(f"block size must be a positive int, got {self.size!r}")
        if self.norm not in ("l1", "l2"):
            raise ValueError(f"block norm must be 'l1' or 'l2', got {self.norm!r}")

    def validate(self, path: str, shape: tuple[int, ...]) -> None:
        _check_2d(f"1x{self.size} block", path, shape, self.size)

    def scores(self, w: jax.Array) -> jax.Array:
        d_in, d_out = w.shape
        blocks = w.astype(jnp.float32).reshape(d_in // self.size, self.size, d_out)
        if self.norm == "l1":
            return jnp.sum(jnp.abs(blocks), axis=1)
        return jnp.sum(jnp.square(blocks), axis=1)  # squared L2: same ranking, no sqrt

    def expand(self, unit_mask: jax.Array, shape: tuple[int, ...]) -> jax.Array:
        del shape
        return jnp.repeat(unit_mask, self.size, axis=0)


Pattern = Union[Unstructured, NM, Block]


def parse(spec: Union[str, Pattern]) -> Pattern:
    """'unstructured' | 'N:M' (e.g. '2:4') | '1xK' or '1xK:l1' / '1xK:l2' -> a pattern."""
    if not isinstance(spec, str):
        if isinstance(spec, (Unstructured, NM, Block)):
            return spec
        raise ValueError(f"not a sparsity pattern: {spec!r}")
    text = spec.strip().lower()
    if text in ("unstructured", "none", ""):
        return Unstructured()
    if match := re.fullmatch(r"(\d+):(\d+)", text):
        return NM(int(match.group(1)), int(match.group(2)))
    if match := re.fullmatch(r"1x(\d+)(?::(l1|l2))?", text):
        return Block(int(match.group(1)), match.group(2) or "l2")
    raise ValueError(
        f"unknown sparsity pattern {spec!r}; use 'unstructured', 'N:M' (e.g. '2:4') or "
        "'1xK' (e.g. '1x4', '1x4:l1')")
