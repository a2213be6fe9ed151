"""One-shot pruning (prune_ofa_jax/prune_once.py) of a tiny classifier on real SST-2 rows:
OBS prunes exactly the level, zeroes what it prunes and corrects the kept weights of the
covered kernels only (everything else bit-identical); the sweep writes its table, JSON and
plot with every series at every level; a recomputation path re-estimates the Fisher at each
stop and shares the dense one; bad flags are one-line errors."""

import json

import jax
import numpy as np
import pytest
import train_helpers

from prune_ofa_jax import errors, prune_once
from prune_ofa_jax.convert import params_ckpt
from prune_ofa_jax.models import bert
from prune_ofa_jax.models import config as model_config
from prune_ofa_jax.sparsity import exact_topk
from prune_ofa_jax.sparsity import masks as masks_lib


def test_path_levels_are_the_grid_plus_the_levels():
    assert prune_once.path_levels((0.5, 0.7, 0.9), 9) == pytest.approx(
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    assert prune_once.path_levels((0.3, 0.6), 3) == pytest.approx([0.2, 0.3, 0.4, 0.6])


def test_obs_one_shot_and_the_sweep(tmp_path, shared_data):
    # save_tiny's classifier with one layer: OBS traces its blockwise maths per kernel
    mcfg = model_config.by_name("bert-base-uncased", **{**train_helpers.TINY, "num_layers": 1},
                                num_labels=2)
    model = str(tmp_path / "cls")
    params_ckpt.save_params(model, bert.init_params(bert.BertFamily(mcfg, "cls"),
                                                    jax.random.key(0)), mcfg, "cls")
    s = prune_once.Settings(model=model, task="sst2", levels=(0.3, 0.6), recompute=(1, 3),
                            num_grads=2, block_size=8, seq_len=32, train_subset=64,
                            eval_subset=32, data_root=str(shared_data))
    one = prune_once.OneShot(s)
    params, masks = one.dense
    fisher = one.fisher(params, masks)
    assert int(fisher.count) == 2 and one.batches_used == 2
    new_p, new_m = one.obs(params, masks, fisher, 0.6)
    dense = dict(masks_lib.named_leaves(jax.device_get(params)))
    kept_m = dict(masks_lib.named_leaves(jax.device_get(new_m)))
    changed = 0
    for path, w in masks_lib.named_leaves(jax.device_get(new_p)):
        m = kept_m.get(path)
        if m is None:  # embeddings, LayerNorms, pooler, head: untouched
            np.testing.assert_array_equal(w, dense[path], err_msg=path)
            continue
        assert "encoder/layer_" in path and path.endswith("kernel"), path
        assert int((~m).sum()) == m.size - exact_topk.host_kept_count(m.size, 0.6), path
        assert np.all(w[~m] == 0.0)
        changed += int(np.any(w[m] != dense[path][m]))  # the OBS update moved kept weights
    assert changed == 6  # 1 layer x 6 kernels

    table = prune_once.sweep(s, say=lambda _: None, one=one)
    prune_once.write(table, tmp_path / "out")
    assert list(table["rows"]) == ["dense", "magnitude", "obs", "obs_r3"]
    for name in ("magnitude", "obs", "obs_r3"):
        for level in (0.3, 0.6):
            assert table["rows"][name][str(level)]["sparsity"] == pytest.approx(level, abs=2e-3)
    # the Fisher above; the sweep's dense one (obs, and the r3 path's first stop 0.2); one
    # before each later stop (0.3, 0.4, 0.6), at the weights of the stop before it
    assert one.batches_used == 2 + 2 * (1 + 3)
    labels = one.labels()
    assert table["majority"] == max(np.mean(labels == 0), np.mean(labels == 1))
    saved = json.loads((tmp_path / "out" / "oneshot.json").read_text())
    assert saved["rows"]["obs"]["0.6"] == table["rows"]["obs"]["0.6"]
    text = (tmp_path / "out" / "oneshot.md").read_text()
    assert "| obs_r3 |" in text and "majority class" in text
    assert (tmp_path / "out" / "oneshot.png").stat().st_size > 5_000


def test_bad_flags_are_usage_errors():
    p = prune_once.parser()
    base = ["--model", "m", "--task", "sst2", "--workdir", "w"]
    for extra, flag in ((["--sparsity", "0.5,1.2"], "--sparsity"),
                        (["--methods", "obs,lottery"], "--methods"),
                        (["--recompute", "0"], "--recompute"),
                        (["--damp", "1e-9"], "--damp")):
        with pytest.raises(errors.UsageError, match=f"^{flag}: must be"):
            prune_once.settings(p.parse_args(base + extra))


def test_the_issue_spelling_method_is_the_same_flag():
    p = prune_once.parser()
    base = ["--model", "m", "--task", "sst2", "--workdir", "w"]
    assert prune_once.settings(p.parse_args(base + ["--method", "obs"])).methods == ("obs",)
    assert prune_once.settings(p.parse_args(base)).methods == ("magnitude", "obs")
