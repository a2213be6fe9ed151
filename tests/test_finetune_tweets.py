"""configs/finetune_tweets.py takes any BERT-family HF checkpoint through --config.init.path:
tiny random BERT, DistilBERT and RoBERTa models made here, each fine-tuned for two steps on
the real disaster-tweets split (a fresh classification head, positive-class F1 + accuracy)."""

import jax
import pytest
import train_helpers

from prune_ofa_jax.convert import hf, params_ckpt
from prune_ofa_jax.models import bert
from prune_ofa_jax.models import config as model_config
from prune_ofa_jax.train import loop


@pytest.mark.parametrize("family,task", [("bert-base-uncased", "pretraining"),
                                         ("distilbert-base-uncased", "mlm"),
                                         ("roberta-base", "mlm")])
def test_tweets_recipe_takes_any_family(family, task, tmp_path, shared_data):
    mcfg = model_config.by_name(family, **train_helpers.TINY)
    params = bert.init_params(bert.BertFamily(mcfg, task), jax.random.key(0))
    # RoBERTa's vocabulary is not MiniLM's: its export carries a tokenizer of its own size
    tok = (train_helpers.tiny_tokenizer(tmp_path / "tok", mcfg.vocab_size, mcfg.pad_token_id)
           if family == "roberta-base" else None)
    hf.export_hf(params, mcfg, task, tmp_path / "hf", tokenizer_dir=tok)  # no cls head
    c = train_helpers.recipe("finetune_tweets", "test", init=str(tmp_path / "hf"))
    c.data.root = str(shared_data)
    c.train.steps = 2
    c.checkpoint.every = 2
    report = loop.run(c, tmp_path / "run")
    assert report["steps"] == 2 and set(report["eval"]) >= {"accuracy", "f1"}
    assert 0.0 <= report["eval"]["f1"] <= 1.0
    _, got, task_out = params_ckpt.load_params(tmp_path / "run" / "model")
    assert (got.model_type, task_out, got.num_labels) == (mcfg.model_type, "cls", 2)
