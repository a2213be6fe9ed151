"""The tokenizer travels with the model, and a model never meets a tokenizer of another
vocabulary: a run, `api.load` and `export-hf` take the explicit tokenizer, else the model
dir's own files, else MiniLM's only for a model with MiniLM's vocabulary; anything else, or
a tokenizer whose vocabulary size or pad id disagree with the model, is one error naming the
setting and the model. (import-hf -> export-hf carrying the files: tests/test_convert.py;
a run's model/ carrying them: tests/test_gcs.py.)"""

import warnings

import numpy as np
import pytest
import train_helpers

from prune_ofa_jax import api, errors, paths
from prune_ofa_jax.convert import __main__ as convert_cli
from prune_ofa_jax.convert import hf, pack_ckpt, params_ckpt
from prune_ofa_jax.models import bert
from prune_ofa_jax.models import config as model_config
from prune_ofa_jax.train import inputs


def _save(directory, family: str, vocab_size: int, task: str = "cls"):
    """A tiny model of `family` as a params checkpoint, random weights (no jit)."""
    cfg = model_config.by_name(family, **train_helpers.TINY, vocab_size=vocab_size)
    shapes = hf.flatten(bert.abstract_params(bert.BertFamily(cfg, task)))
    rng = np.random.default_rng(0)
    params = hf.unflatten({k: rng.normal(0, 0.02, s.shape).astype(np.float32)
                           for k, s in shapes.items()})
    params_ckpt.save_params(directory, params, cfg, task)
    return str(directory), params, cfg


@pytest.fixture(scope="module")
def roberta(tmp_path_factory):
    """A RoBERTa-family params checkpoint (vocab 99, pad id 1) without a tokenizer, and the
    same model with its own tokenizer files."""
    root = tmp_path_factory.mktemp("roberta")
    bare, params, cfg = _save(root / "bare", "roberta-base", 99)
    own = params_ckpt.save_params(root / "own", params, cfg, "cls", tokenizer_dir=
                                  train_helpers.tiny_tokenizer(root / "tok", 99, pad_id=1))
    return bare, str(own), str(root / "tok")


def _config(**keys):
    c = train_helpers.recipe("finetune_glue", "sst2,test", resolve=False)
    c.update_from_flattened_dict(keys)
    return c


def test_a_run_takes_the_models_own_tokenizer_or_minilm_only_for_minilm_vocab(
        roberta, tiny_ckpts):
    bare, own, tok = roberta
    assert inputs.tokenizer(_config(**{"init.path": tiny_ckpts["bert"]}))[0] == \
        str(paths.minilm_dir())  # 30522 ids, pad 0: MiniLM's vocabulary
    path, t = inputs.tokenizer(_config(**{"init.path": own}))
    assert path == own and len(t) == 99 and t.pad_token_id == 1
    assert inputs.tokenizer(_config(**{"init.path": bare, "data.tokenizer": tok}))[0] == tok
    with pytest.raises(errors.ConfigError, match=r"^config.data.tokenizer: the model of "
                       rf"config.init.path={bare} \(roberta, vocab 99, pad id 1\) carries no "
                       "tokenizer"):
        inputs.tokenizer(_config(**{"init.path": bare}))
    with pytest.raises(errors.ConfigError, match=rf"^config.data.tokenizer: the tokenizer "
                       rf"{paths.minilm_dir()} \(vocab 30522, pad id 0\) does not fit the model "
                       rf"of config.init.path={bare} \(roberta, vocab 99, pad id 1\)"):
        inputs.tokenizer(_config(**{"init.path": bare,
                                    "data.tokenizer": str(paths.minilm_dir())}))
    with pytest.raises(errors.ConfigError, match=r"config.model.name=roberta-base \(roberta, "
                       r"vocab 50265, pad id 1\) carries no tokenizer"):
        inputs.tokenizer(_config(**{"init.path": "", "model.name": "roberta-base"}))
    cased = train_helpers.tiny_tokenizer(tok + "_28996", 28996)  # a cased BERT's size
    with pytest.raises(errors.ConfigError, match="vocab 28996, pad id 0"):
        inputs.tokenizer(_config(**{"init.path": tiny_ckpts["bert"], "data.tokenizer": cased}))


def test_api_load_follows_the_same_rule(roberta):
    bare, own, _ = roberta
    assert len(api.load(own).tokenizer) == 99
    with pytest.raises(errors.UserError, match=rf"^tokenizer: the model at {bare} "):
        api.load(bare)
    with pytest.raises(errors.UserError, match="does not fit"):
        api.load(bare, tokenizer=paths.minilm_dir())


def test_export_hf_carries_the_tokenizer_or_stops(roberta, tmp_path, capsys):
    bare, own, tok = roberta
    packed_file = tmp_path / "m.pofa"
    pack_ckpt.pack_checkpoint(own, packed_file, pack_ckpt.default_options())

    def cli(*args):
        capsys.readouterr()
        with warnings.catch_warnings():
            rc = convert_cli.main([str(a) for a in args])
        return rc, capsys.readouterr().err.strip().splitlines()

    assert cli("export-hf", "--ckpt", own, "--workdir", tmp_path / "a")[0] == 0
    assert (tmp_path / "a" / "tokenizer.json").is_file()  # the checkpoint's own
    rc, err = cli("export-hf", "--ckpt", packed_file, "--workdir", tmp_path / "b")
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: --tokenizer_dir: "), err
    assert not (tmp_path / "b").exists()  # a .pofa holds no tokenizer: named explicitly
    rc, err = cli("export-hf", "--ckpt", bare, "--workdir", tmp_path / "c",
                  "--tokenizer_dir", paths.minilm_dir())
    assert rc == 2 and "does not fit" in err[0] and not (tmp_path / "c").exists(), err
    assert cli("export-hf", "--ckpt", packed_file, "--workdir", tmp_path / "d",
               "--tokenizer_dir", tok)[0] == 0
    assert (tmp_path / "d" / "tokenizer_config.json").is_file()
