"""The public API and the registries. docs/api.md's example runs as written (a custom loss
term and a custom pruning method through `api.train`, then `api.load` + predict and the
`method=` door) and does what the page says: the term is logged and added to the loss, the
method's masks are the ones it defines. Each registry (pruning methods, hidden-state
distances, MI bounds, logit losses): a new entry works end to end, an unknown name is a
one-line ConfigError naming the key, a taken name is an error."""

import dataclasses
import json
import pathlib
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import train_helpers

from prune_ofa_jax import config_base, errors, presets
from prune_ofa_jax.convert import params_ckpt
from prune_ofa_jax.distill import intermediate, layer_kd, losses, mi
from prune_ofa_jax.distill import spec as spec_lib
from prune_ofa_jax.sparsity import masks as masks_lib
from prune_ofa_jax.sparsity import methods, patterns
from prune_ofa_jax.sparsity.methods import base
from prune_ofa_jax.train import build, objectives, validate

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "api.md"


def _python_blocks() -> list:
    return re.findall(r"^```python\n(.*?)^```", DOC.read_text(), re.S | re.M)


def _one_line_config_error(excinfo, key: str) -> None:
    msg = str(excinfo.value)
    assert isinstance(excinfo.value, errors.ConfigError) and "\n" not in msg, msg
    assert msg.startswith(f"config.{key}: "), msg


def test_docs_example_runs_and_does_what_it_says(tiny_ckpts, tmp_path):
    blocks = _python_blocks()
    ns = {"__name__": "api_example"}
    exec(compile(blocks[0], str(DOC), "exec"), ns)  # pylint: disable=exec-used
    assert {"INIT", "TEACHER", "WORKDIR"} <= set(ns)  # the paths the page says to set
    ns.update(INIT=tiny_ckpts["bert"], WORKDIR=str(tmp_path / "run"),
              TEACHER=train_helpers.save_tiny(tmp_path / "teacher", task="cls", seed=1))
    try:
        for block in blocks[1:]:
            exec(compile(block, str(DOC), "exec"), ns)  # pylint: disable=exec-used
    finally:
        methods.REGISTRY.remove("random")
    # the term: logged at every log step, nonzero, and the loss is the sum the page states
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text()
            .splitlines()]
    rows = [r for r in rows if "hidden_l2" in r]
    assert len(rows) == 4  # 8 steps, logged every 2
    for r in rows:
        assert r["hidden_l2"] > 0
        want = 0.5 * r["cls_loss"] + 0.5 * r["kd_cls"] + 0.5 * r["hidden_l2"]
        assert r["loss"] == pytest.approx(want, rel=1e-5)
    # the method: half of every covered kernel pruned, exactly where its seeded scores are
    # lowest (not where the weights are smallest: magnitude would choose otherwise)
    assert ns["report"]["sparsity"]["global"] == 0.5
    params = ns["model"].params
    covered = build.make_masks(ns["config"], params)
    method = ns["RandomPruning"](seed=3)
    want = dict(masks_lib.named_leaves(base.topk_masks(method.scores(covered), 0.5, "uniform",
                                                       patterns.Unstructured())))
    init = dict(masks_lib.named_leaves(params_ckpt.load_params(tiny_ckpts["bert"])[0]))
    differs = 0
    for path, w in masks_lib.named_leaves(params):
        if want.get(path) is None:
            continue
        np.testing.assert_array_equal(np.asarray(w) != 0, np.asarray(want[path]), path)
        magnitude = base.topk_masks({"w": jnp.abs(init[path])}, 0.5, "uniform",
                                    patterns.Unstructured())["w"]
        differs += int(np.any(np.asarray(magnitude) != np.asarray(want[path])))
    assert differs == len([m for m in want.values() if m is not None]) > 0
    # predict, and the method= door
    pred = ns["prediction"]
    assert pred.logits.shape == (2, 2) and np.isfinite(pred.logits).all()
    np.testing.assert_array_equal(pred.labels, np.argmax(pred.logits, -1))
    assert type(ns["run"].method).__name__ == "RandomPruning" and ns["run"].method.seed == 1
    assert ns["run"].step_cfg.loss_terms == (ns["hidden_term"],)


def _finetune(**over):
    c = train_helpers.recipe("finetune_glue", "sst2,test", teacher="teacher_dir")
    c.update_from_flattened_dict(over)
    return c


# --- pruning methods ------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class EveryOther(base.Method):
    """Keeps every other weight of each covered tensor: those whose flat index + `offset`
    is odd."""
    offset: int = 0

    def masks(self, params, aux, masks, step):
        del params, aux, step
        return base.map_scored(
            lambda m: (jnp.arange(m.size).reshape(m.shape) + self.offset) % 2 == 1, masks)

    @classmethod
    def check(cls, config):
        super().check(config)
        base.require(cls.settings(config.sparsity)["offset"] in (0, 1),
                     "sparsity.every_other.offset", "must be 0 or 1")


def test_pruning_method_registry():
    methods.register("every_other")(EveryOther)
    try:
        c = config_base.base()  # a config built after the registration has the method's block
        assert c.sparsity.every_other.offset == 0 and "lr" in c.sparsity.movement
        c = _finetune(**{"sparsity.lock_pattern": False, "sparsity.enabled": True,
                         "sparsity.method": "every_other", "sparsity.every_other.offset": 1,
                         "sparsity.end_step": 4})
        validate.validate(c)
        m = methods.from_config(c, regrow=False)
        assert isinstance(m, EveryOther) and (m.name, m.offset) == ("every_other", 1)
        got = m.masks(None, {}, {"k": jnp.ones((2, 3), bool), "b": None}, 0)
        np.testing.assert_array_equal(np.asarray(got["k"]), [[True, False, True],
                                                             [False, True, False]])
        c.sparsity.every_other.offset = 2  # its own check
        with pytest.raises(errors.ConfigError) as e:
            validate.validate(c)
        _one_line_config_error(e, "sparsity.every_other.offset")
        with pytest.raises(ValueError, match="already registered"):
            methods.register("magnitude")(EveryOther)
    finally:
        methods.REGISTRY.remove("every_other")
    c.sparsity.method = "every_other"  # no longer registered
    with pytest.raises(errors.ConfigError) as e:
        validate.validate(c)
    _one_line_config_error(e, "sparsity.method")
    choices = str(e.value).split("is not one of", 1)[1]
    assert "'magnitude'" in choices and "every_other" not in choices


USER_METHOD = """
import dataclasses
from prune_ofa_jax.sparsity import methods
from prune_ofa_jax.sparsity.methods import base


@methods.register("user_cli")
@dataclasses.dataclass(frozen=True)
class UserCli(base.Method):
    strength: float = 0.5
"""
USER_RECIPE = """
import user_methods  # registers "user_cli" before the config is built
from prune_ofa_jax import recipes


def get_config(arg=""):
    return recipes.finetune("glue", "sst2", arg)
"""


@pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")  # config_flags' loader
def test_a_method_registered_by_a_recipe_file_is_chosen_on_the_command_line(tmp_path,
                                                                           monkeypatch):
    """docs/api.md's recipe: a recipe file imports the user's module, so the method's block
    exists and `--config.sparsity.method=... --config.sparsity.<block>.<key>=...` parse
    (as main.py parses them) and validate."""
    from absl import flags
    from ml_collections import config_flags
    (tmp_path / "user_methods.py").write_text(USER_METHOD)
    (tmp_path / "my_recipe.py").write_text(USER_RECIPE)
    monkeypatch.syspath_prepend(str(tmp_path))
    argv = ["main", f"--config={tmp_path / 'my_recipe.py'}:test",
            "--config.sparsity.method=user_cli", "--config.sparsity.user_cli.strength=0.25",
            "--config.sparsity.enabled=True", "--config.sparsity.lock_pattern=False",
            "--config.sparsity.end_step=4"]
    fv = flags.FlagValues()
    try:
        config_flags.DEFINE_config_file("config", None, flag_values=fv, lock_config=True,
                                        sys_argv=argv)
        fv(argv)
        c = presets.resolve(fv.config)
        validate.validate(c)
        m = methods.from_config(c, regrow=False)
        assert (type(m).__name__, m.name, m.strength) == ("UserCli", "user_cli", 0.25)
    finally:
        methods.REGISTRY.remove("user_cli")
        monkeypatch.delitem(sys.modules, "user_methods", raising=False)


# --- distillation terms ---------------------------------------------------------------------
def _outputs(seed: int, layers: int = 2, width: int = 8):
    keys = jax.random.split(jax.random.key(seed), layers + 1)
    return {"hidden_states": tuple(jax.random.normal(k, (4, 5, width)) for k in keys)}


def test_distance_registry():
    def l1(student, teacher, mask):
        w = mask[..., None].astype(jnp.float32)
        return jnp.sum(jnp.abs(student - teacher) * w) / (jnp.sum(w) * student.shape[-1])

    intermediate.DISTANCES.register("l1")(l1)
    try:
        validate.validate(_finetune(**{"distill.intermediate": "l1"}))
        s, t = _outputs(0), _outputs(1)
        mask = jnp.ones((4, 5)).at[:, 3:].set(0)
        spec = spec_lib.Spec(intermediate="l1", intermediate_weight=2.0)
        # one compiled program, not an XLA compile per primitive of the eager loss
        total, terms = jax.jit(lambda s, t, m: layer_kd.loss(spec, None, s, t, m))(s, t, mask)
        want = np.mean([float(l1(s["hidden_states"][i], t["hidden_states"][i], mask))
                        for i in (1, 2)])  # the skip map of 2 layers onto 2
        assert float(terms["inter_l1"]) == pytest.approx(want, rel=1e-6)
        assert float(total) == pytest.approx(2.0 * want, rel=1e-6)
        for taken in ("mse", "infonce"):  # a distance's name, and an MI bound's (same key)
            with pytest.raises(ValueError, match="already registered"):
                intermediate.DISTANCES.register(taken)(l1)
    finally:
        intermediate.DISTANCES.remove("l1")
    with pytest.raises(errors.ConfigError) as e:
        validate.validate(_finetune(**{"distill.intermediate": "l1"}))
    _one_line_config_error(e, "distill.intermediate")


def test_mi_bound_registry():
    def donsker_varadhan(scores, log_baseline, alpha):
        del log_baseline, alpha
        return jnp.mean(jnp.diagonal(scores)) - mi.logmeanexp_offdiag(scores)

    def check(config):
        if config.distill.critic != "mlp":
            raise errors.ConfigError("config.distill.critic: dv wants the mlp critic")

    mi.BOUNDS.register("dv", check=check)(donsker_varadhan)
    try:
        validate.validate(_finetune(**{"distill.intermediate": "dv"}))
        with pytest.raises(errors.ConfigError) as e:  # its own check
            validate.validate(_finetune(**{"distill.intermediate": "dv",
                                           "distill.critic": "encoder"}))
        _one_line_config_error(e, "distill.critic")
        scores = jax.random.normal(jax.random.key(0), (4, 4))
        assert float(mi.bound("dv", scores, None, 0.9)) == pytest.approx(
            float(donsker_varadhan(scores, None, None)))
        spec = spec_lib.Spec(intermediate="dv", critic_hidden=8, critic_dim=4)
        assert spec.is_mi
        critics = layer_kd.init_params(spec, (2, 8), (2, 8))
        assert sorted(critics) == ["critic_s0_t0", "critic_s1_t1"]
        _, terms = jax.jit(lambda c, s, t, m: layer_kd.loss(spec, c, s, t, m))(
            critics, _outputs(0), _outputs(1), jnp.ones((4, 5)))  # one compile, as above
        assert float(terms["inter_dv"]) == pytest.approx(-float(terms["mi_nats"]), abs=1e-6)
        with pytest.raises(ValueError, match="already registered"):
            mi.BOUNDS.register("tuba")(donsker_varadhan)
    finally:
        mi.BOUNDS.remove("dv")
    with pytest.raises(errors.ConfigError) as e:
        mi.bound("dv", jnp.zeros((4, 4)), None, 0.9)
    _one_line_config_error(e, "distill.intermediate")


def test_logit_loss_registry():
    def l1_logits(student, teacher, temperature, weights=None):
        del temperature
        return losses.weighted_mean(jnp.mean(jnp.abs(student - teacher), -1), weights)

    def sentence_heads(config):
        if config.task != "cls":
            raise errors.ConfigError("config.distill.logit_loss: l1 is for task cls")

    losses.LOGIT_LOSSES.register("l1", check=sentence_heads)(l1_logits)
    try:
        validate.validate(_finetune(**{"distill.logit_loss": "l1"}))
        upstream = train_helpers.recipe("prune_ofa_bert_base", "test", teacher="teacher_dir")
        upstream.distill.logit_loss = "l1"
        with pytest.raises(errors.ConfigError) as e:
            validate.validate(upstream)
        _one_line_config_error(e, "distill.logit_loss")
        s, t = jnp.array([[1.0, -1.0], [0.5, 0.0]]), jnp.array([[0.0, 1.0], [0.5, 2.0]])
        loss, terms = objectives.kd_loss("cls", 2, {"logits": s}, {"logits": t}, {}, 2.0,
                                         False, "l1")
        assert float(loss) == float(terms["kd_cls"]) == pytest.approx((1.5 + 1.0) / 2)
        with pytest.raises(ValueError, match="already registered"):
            losses.LOGIT_LOSSES.register("kl")(l1_logits)
    finally:
        losses.LOGIT_LOSSES.remove("l1")
    with pytest.raises(errors.ConfigError) as e:
        validate.validate(_finetune(**{"distill.logit_loss": "l1"}))
    _one_line_config_error(e, "distill.logit_loss")
