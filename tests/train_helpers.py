"""Shared helpers for the training tests: tiny checkpoints, recipe loading, a run killed and
resumed beside a straight one, a study's rerun into its docs page, int8 logits compared."""

import importlib.util
import pathlib

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from prune_ofa_jax import checkpoint as ckpt_lib
from prune_ofa_jax import presets
from prune_ofa_jax.convert import params_ckpt
from prune_ofa_jax.models import bert
from prune_ofa_jax.models import config as model_config
from prune_ofa_jax.runtime import ort
from prune_ofa_jax.study import harness
from prune_ofa_jax.train import inputs, loop

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY = dict(num_layers=2, hidden_size=32, num_heads=2, intermediate_size=64,
            max_position_embeddings=64)


def assert_int8_close(actual, desired):
    """An int8 onnxruntime graph's logits against their reference: equal within 1e-5 where
    the CPU's int8 kernels are exact (ort.int8_exact); on a pre-VNNI CPU, where int16
    saturation moves a value by a rounding step now and then, most logits still equal and
    every one within 2e-3."""
    actual, desired = np.asarray(actual), np.asarray(desired)
    if ort.int8_exact():
        np.testing.assert_allclose(actual, desired, atol=1e-5)
        return
    same = np.isclose(actual, desired, rtol=0, atol=1e-5)
    assert same.mean() >= 0.5, f"{int((~same).sum())} of {same.size} int8 logits differ"
    np.testing.assert_allclose(actual, desired, atol=2e-3)


def save_tiny(directory, family="bert-base-uncased", task="pretraining", num_labels=2, seed=0):
    """A randomly initialised tiny model of `family` (real 30522 vocab) as a params ckpt."""
    mcfg = model_config.by_name(family, **TINY, num_labels=num_labels)
    params = bert.init_params(bert.BertFamily(mcfg, task), jax.random.key(seed))
    params_ckpt.save_params(directory, params, mcfg, task)
    return str(directory)


def recipe(name: str, arg: str = "test", resolve: bool = True, **paths):
    """configs/<name>.py:<arg> as a ConfigDict, with init/teacher paths set and (unless
    `resolve=False`) its preset resolved, as loop.run does: no key is left None."""
    spec = importlib.util.spec_from_file_location(name, REPO / "configs" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config(arg)
    c.init.path = paths.get("init", c.init.path)
    c.teacher.path = paths.get("teacher", c.teacher.path)
    return presets.resolve(c) if resolve else c


def tiny_tokenizer(directory, vocab_size: int, pad_id: int = 0):
    """A fast word-level tokenizer of exactly `vocab_size` ids saved as an HF tokenizer dir:
    BERT's special tokens ([PAD] 0, [UNK], [CLS], [SEP], [MASK]) for pad_id 0, RoBERTa's
    (<s>, <pad> 1, </s>, <unk>, <mask>) for pad_id 1, then words w5, w6, ...; any other
    word is the unknown token. For tests of models without MiniLM's vocabulary."""
    import tokenizers  # pylint: disable=import-outside-toplevel
    import transformers  # pylint: disable=import-outside-toplevel
    names = (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] if pad_id == 0
             else ["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    vocab = {t: i for i, t in enumerate(names)}
    vocab.update({f"w{i}": i for i in range(len(names), vocab_size)})
    cls, sep = (names[2], names[3]) if pad_id == 0 else (names[0], names[2])
    unk, mask, pad = (names[1], names[4], names[0]) if pad_id == 0 else (names[3], names[4],
                                                                         names[1])
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token=unk))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.post_processor = tokenizers.processors.TemplateProcessing(
        single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])])
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token=unk, pad_token=pad, cls_token=cls, sep_token=sep,
        mask_token=mask, model_max_length=512)
    fast.save_pretrained(str(directory))
    return str(directory)


def interrupting(real, step_at: int):
    """A make_sources that raises KeyboardInterrupt (a kill) when batch `step_at` is asked for."""
    def make(cfg):
        src = real(cfg)
        batch = src.train.batch

        def interrupted(step):
            if step == step_at:
                raise KeyboardInterrupt("simulated kill")
            return batch(step)
        src.train.batch = interrupted
        return src
    return make


def run_straight_and_killed(c, root, monkeypatch, kill_at: int) -> dict:
    """loop.run of `c` uninterrupted in root/straight, and in root/resumed killed when it asks
    for batch `kill_at`, then the same command again (it resumes). The straight run's report."""
    report = loop.run(c, root / "straight")
    real = inputs.make_sources
    monkeypatch.setattr(inputs, "make_sources", interrupting(real, kill_at))
    with pytest.raises(KeyboardInterrupt):
        loop.run(c, root / "resumed")
    monkeypatch.setattr(inputs, "make_sources", real)
    loop.run(c, root / "resumed")
    return report


def saved_states(root, step: int) -> list:
    """[straight, resumed]: the train state each run of run_straight_and_killed saved at `step`."""
    return [ckpt_lib.make_manager(root / d / "checkpoints").restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
        for d in ("straight", "resumed")]


def study_rerun_into_page(study, config_file: str, p, work, tmp_path, capsys) -> tuple:
    """The study's command line on the settings of `p` (base model, data root) over the
    finished `work`, with --doc on tmp_path/repo/<marker>.md, its markers between other text:
    (the page's text after it, the console output, the end marker). Asserts exit 0."""
    begin, end = harness.markers(study.marker)
    page = tmp_path / "repo" / f"{study.marker}.md"
    page.parent.mkdir()
    page.write_text(f"# x\n{begin}\nold\n{end}\n## After\n")
    capsys.readouterr()
    assert harness.main(study, [
        "--config", f"{REPO / 'configs' / config_file}:test",
        f"--config.base_model={p.base_model}", f"--config.data_root={p.data_root}",
        f"--workdir={work}", f"--doc={page}"]) == 0
    return page.read_text(), capsys.readouterr().out, end
