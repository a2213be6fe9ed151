"""HF PyTorch <-> Flax conversion: logit parity, exact round trips, real MiniLM, the CLI.

Max abs diffs are printed (run with -s to see them).
"""

import json
import pathlib

import cli_helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.torch
import torch
import train_helpers
import transformers

from prune_ofa_jax import paths as paths_lib
from prune_ofa_jax.convert import hf, hf_names, params_ckpt
from prune_ofa_jax.models import bert

TOL = 1e-4
REPO = pathlib.Path(__file__).resolve().parents[1]
# (family, task, num_labels); num_labels 1 = regression.
CASES = [
    ("bert", "mlm", 2), ("bert", "pretraining", 2), ("bert", "cls", 3), ("bert", "cls", 1),
    ("bert", "qa", 2), ("bert", "base", 2),
    ("distilbert", "mlm", 2), ("distilbert", "cls", 3), ("distilbert", "cls", 1),
    ("distilbert", "qa", 2),
    ("roberta", "mlm", 2), ("roberta", "cls", 3), ("roberta", "cls", 1), ("roberta", "qa", 2),
    ("roberta", "base", 2),
]
# Flax output key -> HF output attribute.
OUTPUTS = {
    "mlm": {"mlm_logits": "logits"},
    "pretraining": {"mlm_logits": "prediction_logits", "nsp_logits": "seq_relationship_logits"},
    "cls": {"logits": "logits"},
    "qa": {"start_logits": "start_logits", "end_logits": "end_logits"},
    "base": {"last_hidden_state": "last_hidden_state", "pooler_output": "pooler_output"},
}
AUTO = {"mlm": transformers.AutoModelForMaskedLM,
        "pretraining": transformers.AutoModelForPreTraining,
        "cls": transformers.AutoModelForSequenceClassification,
        "qa": transformers.AutoModelForQuestionAnswering, "base": transformers.AutoModel}


def hf_tiny_config(family, num_labels=2):
    if family == "distilbert":
        return transformers.DistilBertConfig(vocab_size=99, dim=32, n_layers=2, n_heads=4,
                                             hidden_dim=37, max_position_embeddings=64,
                                             num_labels=num_labels)
    cls = transformers.BertConfig if family == "bert" else transformers.RobertaConfig
    return cls(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
               intermediate_size=37, max_position_embeddings=64, num_labels=num_labels)


def random_hf_model(family, task, num_labels=2, seed=0):
    """A tiny HF model with every parameter random (tied ones stay tied), eval mode."""
    torch.manual_seed(seed)
    model = getattr(transformers, hf_names.hf_class_name(family, task))(
        hf_tiny_config(family, num_labels))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model.eval()


def inputs(family):
    """Batch with padding (attention_mask zeros, pad ids there) and two token types."""
    pad = 1 if family == "roberta" else 0
    ids = np.random.RandomState(0).randint(3, 99, (3, 11))
    mask = np.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 4:] = 0
    batch = {"input_ids": np.where(mask == 1, ids, pad), "attention_mask": mask}
    if family != "distilbert":
        batch["token_type_ids"] = (np.arange(11)[None, :] >= 5).astype(np.int64).repeat(3, 0)
    return batch


def torch_outputs(model, batch):
    with torch.no_grad():
        return model(**{k: torch.tensor(v) for k, v in batch.items()})


def flax_outputs(params, model_config, task, batch):
    model = bert.BertFamily(model_config, task)
    return model.apply({"params": params}, jnp.asarray(batch["input_ids"]),
                       jnp.asarray(batch["attention_mask"]),
                       jnp.asarray(batch["token_type_ids"]) if "token_type_ids" in batch else None)


def max_diffs(flax_out, torch_out, task):
    return {k: float(np.abs(np.asarray(flax_out[k]) - getattr(torch_out, a).numpy()).max())
            for k, a in OUTPUTS[task].items() if k in flax_out}


def case_id(case):
    family, task, labels = case
    return f"{family}-{task}" + ("-regression" if labels == 1 else "")


@pytest.fixture(scope="module", params=CASES, ids=case_id)
def converted(request, tmp_path_factory):
    """HF dir -> import -> export -> reload, once per case."""
    family, task, num_labels = request.param
    root = tmp_path_factory.mktemp(case_id(request.param))
    model = random_hf_model(family, task, num_labels)
    model.save_pretrained(root / "hf")
    params, model_config = hf.import_hf(root / "hf", task)
    hf.export_hf(params, model_config, task, root / "exported")
    reloaded = AUTO[task].from_pretrained(root / "exported").eval()
    return dict(id=case_id(request.param), family=family, task=task, model=model, params=params, config=model_config,
                reloaded=reloaded, batch=inputs(family), root=root)


def _assert_parity(c, torch_model, label: str):
    """Our outputs on c's params equal `torch_model`'s on the same batch, within TOL."""
    diffs = max_diffs(flax_outputs(c["params"], c["config"], c["task"], c["batch"]),
                      torch_outputs(torch_model, c["batch"]), c["task"])
    print(f"\n[parity {label}] {c['id']}: " +
          ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
    assert diffs and max(diffs.values()) < TOL


def test_import_matches_pytorch_logits(converted):
    assert converted["config"].num_labels == (converted["model"].config.num_labels)
    _assert_parity(converted, converted["model"], "import")


def test_export_reload_matches_logits(converted):
    assert type(converted["reloaded"]) is type(converted["model"])
    _assert_parity(converted, converted["reloaded"], "export")


def test_round_trip_state_dict_identical(converted):
    before, after = converted["model"].state_dict(), converted["reloaded"].state_dict()
    assert set(before) == set(after)
    for key, value in before.items():
        assert torch.equal(value, after[key]), key


# --- real MiniLM ------------------------------------------------------------------------------
def test_real_minilm_matches_pytorch():
    minilm = paths_lib.minilm_dir()
    tok = transformers.AutoTokenizer.from_pretrained(str(minilm))
    sentences = ["Prune once for all: sparse pre-trained language models.",
                 "The quick brown fox jumps over the lazy dog!", "Short one."]
    enc = dict(tok(sentences, padding=True, return_tensors="np"))
    assert (enc["attention_mask"] == 0).any()
    params, model_config = hf.import_hf(minilm, "base")
    assert model_config.hidden_size == 384 and model_config.num_layers == 6
    ours = flax_outputs(params, model_config, "base", enc)
    theirs = torch_outputs(transformers.BertModel.from_pretrained(str(minilm)).eval(), enc)
    diffs = max_diffs(ours, theirs, "base")
    real = enc["attention_mask"].astype(bool)  # outputs at [PAD] queries are not meaningful
    diffs["last_hidden_state (non-pad tokens)"] = float(np.abs(
        np.asarray(ours["last_hidden_state"]) - theirs.last_hidden_state.numpy())[real].max())
    print("\n[parity MiniLM-L6 real] " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
    assert diffs["last_hidden_state (non-pad tokens)"] < TOL and diffs["pooler_output"] < TOL
    assert diffs["last_hidden_state"] < 10 * TOL


def test_base_checkpoint_needs_init_missing_heads(caplog):
    minilm = paths_lib.minilm_dir()
    with pytest.raises(hf.ConversionError, match="task head absent.*mlm_head"):
        hf.import_hf(minilm, "mlm")
    params, _ = hf.import_hf(minilm, "mlm", init_missing_heads=True, rng_seed=3)
    assert "initialised missing heads" in caplog.text and "mlm_head/transform" in caplog.text
    state = safetensors.torch.load_file(str(minilm / "model.safetensors"))
    np.testing.assert_array_equal(
        params["backbone"]["encoder"]["layer_5"]["ffn"]["output"]["kernel"],
        state["encoder.layer.5.output.dense.weight"].numpy().T)
    assert float(jnp.abs(params["mlm_head"]["transform"]["kernel"]).max()) > 0


# --- formats, sparsity, checkpoints --------------------------------------------------------
def test_legacy_bin_with_prefix_and_gamma_beta(tmp_path):
    """pytorch_model.bin, a "bert."-prefixed BertModel, LayerNorm gamma/beta (old TF ports)."""
    model = random_hf_model("bert", "base")
    legacy = {}
    for k, v in model.state_dict().items():
        k = "bert." + k.replace("LayerNorm.weight", "LayerNorm.gamma").replace(
            "LayerNorm.bias", "LayerNorm.beta")
        legacy[k] = v
    model.config.save_pretrained(tmp_path)
    torch.save(legacy, tmp_path / "pytorch_model.bin")
    params, cfg = hf.import_hf(tmp_path, "base")
    diffs = max_diffs(flax_outputs(params, cfg, "base", inputs("bert")),
                      torch_outputs(model, inputs("bert")), "base")
    assert max(diffs.values()) < TOL


def test_num_labels_mismatch_names_tensor(tmp_path):
    random_hf_model("roberta", "cls", 3).save_pretrained(tmp_path)
    with pytest.raises(hf.ConversionError, match=r"classifier\.out_proj\.bias: checkpoint \(3,\)"
                                                 r", model config expects \(5,\)"):
        hf.import_hf(tmp_path, "cls", num_labels=5)


def test_masked_export_keeps_exact_zeros(converted_mlm_params, tmp_path):
    params, model_config = converted_mlm_params
    rng = np.random.RandomState(0)
    masked = jax.tree.map(np.asarray, params)
    zeroed = {}
    for i in range(2):
        for sub in ("attention", "ffn"):
            name = "query" if sub == "attention" else "intermediate"
            kernel = masked["backbone"]["encoder"][f"layer_{i}"][sub][name]["kernel"]
            keep = rng.rand(*kernel.shape) > 0.7
            masked["backbone"]["encoder"][f"layer_{i}"][sub][name]["kernel"] = kernel * keep
            zeroed[(i, name)] = ~keep
    params_ckpt.save_params(tmp_path / "ckpt", masked, model_config, "mlm")
    loaded, cfg2, task = params_ckpt.load_params(tmp_path / "ckpt")
    assert (cfg2, task) == (model_config, "mlm")
    hf.export_hf(loaded, cfg2, task, tmp_path / "hf")
    sd = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "hf").state_dict()
    for (i, name), was_zeroed in zeroed.items():
        hf_name = {"query": "attention.self.query", "intermediate": "intermediate.dense"}[name]
        weight = sd[f"bert.encoder.layer.{i}.{hf_name}.weight"].numpy().T
        assert (weight[was_zeroed] == 0).all() and (weight[~was_zeroed] != 0).all()
        assert int((weight == 0).sum()) == int(was_zeroed.sum())


@pytest.fixture(scope="module")
def converted_mlm_params(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlm_src")
    random_hf_model("bert", "mlm").save_pretrained(root)
    return hf.import_hf(root, "mlm")


# --- CLI ---------------------------------------------------------------------------------------
def run_cli(checks: dict) -> dict:
    """name -> argv of `python -m prune_ofa_jax.convert`, run in turn in one process
    (tests/cli_helpers.py), on 1 device with XLA's default flags."""
    environ = cli_helpers.env()
    environ.pop("XLA_FLAGS", None)
    return cli_helpers.run_modules(
        {k: ("prune_ofa_jax.convert", argv) for k, argv in checks.items()}, REPO, environ)


@pytest.fixture(scope="module")
def bad_dirs(tmp_path_factory):
    """HF dirs that must be rejected, keyed by the failure."""
    root = tmp_path_factory.mktemp("bad")
    base = random_hf_model("bert", "base")
    base.save_pretrained(root / "bert_base")
    (root / "gpt2").mkdir()
    (root / "gpt2" / "config.json").write_text(json.dumps(
        {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
    base.save_pretrained(root / "shape")
    cfg = json.loads((root / "shape" / "config.json").read_text())
    cfg["intermediate_size"] = 40
    (root / "shape" / "config.json").write_text(json.dumps(cfg))
    base.save_pretrained(root / "missing")
    sd = safetensors.torch.load_file(str(root / "missing" / "model.safetensors"))
    del sd["encoder.layer.1.attention.self.key.weight"]
    safetensors.torch.save_file(sd, str(root / "missing" / "model.safetensors"),
                                metadata={"format": "pt"})
    random_hf_model("distilbert", "mlm").save_pretrained(root / "distil")
    return root


def test_cli_import_export_round_trip(tmp_path):
    """The tokenizer travels: HF dir -> params checkpoint -> HF export, no flag needed."""
    src = random_hf_model("roberta", "cls", 3)
    src.save_pretrained(tmp_path / "hf")
    train_helpers.tiny_tokenizer(tmp_path / "hf", 99, pad_id=1)  # the model's own vocabulary
    out = run_cli({"import": ["import-hf", "--hf_dir", tmp_path / "hf", "--workdir",
                              tmp_path / "ckpt"],
                   "export": ["export-hf", "--ckpt", tmp_path / "ckpt", "--workdir",
                              tmp_path / "out"]})
    assert out["import"]["code"] == 0, out["import"]["stderr"]
    assert out["export"]["code"] == 0, out["export"]["stderr"]
    _, cfg, task = params_ckpt.load_params(tmp_path / "ckpt")
    assert (task, cfg.model_type, cfg.num_labels) == ("cls", "roberta", 3)
    assert (tmp_path / "ckpt" / "tokenizer.json").is_file()
    assert len(transformers.AutoTokenizer.from_pretrained(tmp_path / "out")) == 99
    after = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "out")
    for key, value in src.state_dict().items():
        assert torch.equal(value, after.state_dict()[key]), key


def test_cli_errors_are_one_line_and_leave_nothing(bad_dirs, tmp_path):
    cases = {  # name: (args, expected message fragment)
        "missing_dir": (["import-hf", "--hf_dir", bad_dirs / "nope"], "not found"),
        "unknown_arch": (["import-hf", "--hf_dir", bad_dirs / "gpt2"], "unsupported architecture"),
        "shape": (["import-hf", "--hf_dir", bad_dirs / "shape"],
                  "shape mismatch for encoder.layer.0.intermediate.dense.bias: checkpoint (37,), "
                  "model config expects (40,)"),
        "missing_tensor": (["import-hf", "--hf_dir", bad_dirs / "missing"],
                           "missing tensor encoder.layer.1.attention.self.key.weight"),
        "head_absent": (["import-hf", "--hf_dir", bad_dirs / "bert_base", "--task", "cls"],
                        "task head absent"),
        "no_nsp_head": (["import-hf", "--hf_dir", bad_dirs / "distil", "--task", "pretraining"],
                        "pretraining"),
        "bad_ckpt": (["export-hf", "--ckpt", bad_dirs / "bert_base"], "not a params checkpoint"),
    }
    out = run_cli({name: [*args, "--workdir", tmp_path / name]
                   for name, (args, _) in cases.items()})
    for name, r in out.items():
        lines = [l for l in r["stderr"].splitlines() if l.strip()]
        assert r["code"] not in (0, None, "returned"), name
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, lines)
        assert cases[name][1] in lines[0], (name, lines[0])
    assert not any(tmp_path.iterdir()), list(tmp_path.iterdir())
