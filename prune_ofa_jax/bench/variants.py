"""The JAX steps the bench times: each is the real jitted `train_step` from
`train.build.build(config)`, with config = `recipes.upstream(...)` plus the variant's
switches (masks, teacher, vocab projection at masked positions only, QAT, task)."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import pathlib
import time
from typing import Any, Optional

import jax
import ml_collections

from prune_ofa_jax import presets, recipes
from prune_ofa_jax.bench import settings
from prune_ofa_jax.convert import params_ckpt
from prune_ofa_jax.models import bert
from prune_ofa_jax.models import config as model_config_lib
from prune_ofa_jax.parallel import mesh as mesh_lib
from prune_ofa_jax.train import build as build_lib


@dataclasses.dataclass(frozen=True)
class Kind:
    """One step variant. `mlm`: task "mlm" (no NSP/pooler, as HF BertForMaskedLM)."""
    masks: bool = False
    teacher: bool = False
    gathered: bool = True          # distill.mlm_positions_only
    qat: bool = False
    mlm: bool = False
    update_every_step: bool = False
    fused: bool = False            # all-token KD fused (distill.fused_chunk > 0) vs naive
    extra: bool = False            # only with config.extras
    regrow: bool = False           # sparsity.regrow (preset reference) vs hard zero (fast)
    requant: bool = True           # QAT: quant.requantize_output (both presets: on)
    long: bool = False             # rows 4x longer, 4x fewer (same tokens): seq 512 vs 128
    presets_only: bool = False     # only in --config.suite=presets


KINDS = {
    "dense": Kind(),
    "prune_ofa": Kind(masks=True, teacher=True),
    "prune_ofa_full_vocab": Kind(masks=True, teacher=True, gathered=False),
    "reference_kd": Kind(masks=True, teacher=True, gathered=False, fused=True),
    "masks_only": Kind(masks=True),
    "qat": Kind(qat=True),
    "mlm_full_vocab": Kind(mlm=True, gathered=False),
    "dense_full_vocab": Kind(gathered=False),
    "mlm_gathered": Kind(mlm=True, extra=True),
    "mask_update": Kind(masks=True, update_every_step=True, extra=True),
    # --config.suite=presets: the cost of each choice the reference preset makes.
    "prune_ofa_regrow": Kind(masks=True, teacher=True, regrow=True, presets_only=True),
    "reference_step": Kind(masks=True, teacher=True, gathered=False, fused=True, regrow=True,
                           presets_only=True),
    "qat_no_requant": Kind(qat=True, requant=False, presets_only=True),
    "dense_long": Kind(long=True, presets_only=True),
}

# --config.suite=kd: the reference-mode KD figures (and the masked-positions step).
KD_SUITE = ("dense_full_vocab", "reference_kd", "dense", "prune_ofa")
# --config.suite=presets: fast's step, each reference choice alone, and all of them.
PRESETS_SUITE = ("dense", "dense_long", "prune_ofa", "prune_ofa_regrow", "reference_kd",
                 "reference_step", "qat", "qat_no_requant")
SUITES = ("all", "kd", "presets")


def kinds(extras: bool, suite: str = "all") -> list[str]:
    if suite not in SUITES:
        raise ValueError(f"config.suite: {suite!r} is not one of {SUITES + ('input',)}")
    if suite == "kd":
        return list(KD_SUITE)
    if suite == "presets":
        return list(PRESETS_SUITE)
    return [k for k, v in KINDS.items() if (extras or not v.extra) and not v.presets_only]


def shape(kind: str, batch_size: int, seq_len: int, predictions: int) -> tuple[int, int, int]:
    """(rows, tokens per row, masked positions per row) of a variant's batch: a `long`
    variant has 4x longer rows and 4x fewer of them, so every variant sees the same tokens."""
    if KINDS[kind].long:
        if batch_size % 4:
            raise ValueError(f"config.batch_size={batch_size}: the long-row variant needs a "
                             "multiple of 4")
        return batch_size // 4, seq_len * 4, predictions * 4
    return batch_size, seq_len, predictions


def base_config(model: str, overrides: str, dtype: str, batch_size: int, seq_len: int,
                predictions: int, target: float, seed: int) -> ml_collections.ConfigDict:
    """The Prune OFA upstream recipe for the bench model and shapes."""
    name, extra = settings.resolve_model(model, overrides)
    c = recipes.upstream(name, target)
    # Hard zero in every variant (the `fast` preset's; `reference` keeps dense latent weights,
    # one mask multiply less per step). Each variant sets its KD positions itself.
    c.preset = "fast"
    c.model.overrides = ml_collections.ConfigDict(extra)
    c.model.dtype = dtype
    c.seed = seed
    c.train.batch_size = batch_size
    c.data.seq_len = seq_len
    c.data.max_predictions = predictions
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = -1, 1, 1
    return presets.resolve(c)  # the PyTorch step reads base.optim too


def variant_config(base: ml_collections.ConfigDict, kind: str, teacher_path: str,
                   student_path: str = "") -> ml_collections.ConfigDict:
    """`student_path`: the student's weights (save_random; "": a random init of its own)."""
    k = KINDS[kind]
    c = ml_collections.ConfigDict(base.to_dict())
    c.sparsity.enabled = k.masks
    if k.update_every_step:
        c.sparsity.update_every = 1
    c.distill.kd_weight = 0.5 if k.teacher else 0.0
    c.teacher.path = teacher_path if k.teacher else ""
    c.init.path = student_path
    c.distill.mlm_positions_only = k.gathered
    c.distill.fused_chunk = base.distill.fused_chunk if k.fused else 0
    c.quant.enabled = k.qat
    c.quant.requantize_output = k.requant
    c.sparsity.regrow = k.regrow
    c.train.batch_size, c.data.seq_len, c.data.max_predictions = shape(
        kind, base.train.batch_size, base.data.seq_len, base.data.max_predictions)
    if k.mlm:
        c.task, c.data.nsp = "mlm", False
    return c


def model_config_of(base: ml_collections.ConfigDict):
    """The ModelConfig build() will use for `base` (random init)."""
    return model_config_lib.by_name(base.model.name, **dict(base.model.overrides),
                                    dtype=base.model.dtype)


def save_random(base: ml_collections.ConfigDict, directory: pathlib.Path, name: str,
                seed: int) -> str:
    """A random-init dense model of the bench's shape (float32, base.task's heads) as a params
    checkpoint `directory/name`."""
    mcfg = model_config_of(base).replace(dtype="float32")
    model = bert.BertFamily(mcfg, base.task)
    params = bert.init_params(model, jax.random.key(seed))
    return str(params_ckpt.save_params(directory / name, params, mcfg, base.task,
                                       overwrite=True))


def save_teacher(base: ml_collections.ConfigDict, directory: pathlib.Path) -> str:
    return save_random(base, directory, "teacher", base.seed + 1)


def save_student(base: ml_collections.ConfigDict, directory: pathlib.Path) -> str:
    """The weights every variant starts from: initialised and compiled once, not once per
    variant (build() then initialises only what a variant adds: QAT's statistics, another
    task's head), and the same values as each variant's own init with base.seed."""
    return save_random(base, directory, "student", base.seed)


class JaxStep:
    """One variant: its compiled step, its (donated, fed back) state and the batch."""

    def __init__(self, name: str, run: build_lib.Run, batch: dict):
        self.name, self.run, self.batch = name, run, batch
        self.state, run.state = run.state, None
        self.lowered = run.step_fn.lower(self.state, run.teacher_params, batch)
        self.compiled: Optional[Any] = None
        self.compile_s = float("nan")
        self.metrics: dict = {}

    def compile(self, options: Optional[dict] = None) -> "JaxStep":
        t0 = time.perf_counter()
        self.compiled = self.lowered.compile(compiler_options=options or None)
        self.compile_s = time.perf_counter() - t0
        return self

    def peak_bytes(self) -> int:
        """Compiled peak: temporaries + arguments (XLA's memory analysis)."""
        m = self.compiled.memory_analysis()
        return int(m.temp_size_in_bytes + m.argument_size_in_bytes)

    def __call__(self) -> None:
        self.state, self.metrics = self.compiled(self.state, self.run.teacher_params,
                                                 self.batch)
        jax.block_until_ready((self.state, self.metrics))

    def last_loss(self) -> float:
        return float(self.metrics["loss"]) if self.metrics else float("nan")


FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def build_steps(base: ml_collections.ConfigDict, names: list[str], teacher_path: str,
                local_batch: dict, mesh, threads: int = 2, fast: bool = False,
                log=print, long_batch: Optional[dict] = None,
                student_path: str = "") -> dict[str, JaxStep]:
    """Builds, lowers and compiles every variant, `threads` at a time (XLA compiles, about
    half of it, release the GIL). `long_batch`: the `long` variants' rows; `student_path`:
    the weights every variant starts from (save_student). Returns them in the order of
    `names`."""
    batches = {False: mesh_lib.global_batch(local_batch, mesh, accum=1)}
    if long_batch is not None:
        batches[True] = mesh_lib.global_batch(long_batch, mesh, accum=1)
    options = FAST_COMPILE if fast else None

    def make(name: str) -> JaxStep:
        t0 = time.perf_counter()
        run = build_lib.build(variant_config(base, name, teacher_path, student_path), mesh)
        step = JaxStep(name, run, batches[KINDS[name].long])
        t_build = time.perf_counter() - t0
        step.compile(options)
        log(f"  built {name} in {t_build:.1f} s, compiled in {step.compile_s:.1f} s")
        return step

    with concurrent.futures.ThreadPoolExecutor(max(1, threads)) as pool:
        return dict(zip(names, pool.map(make, names)))
