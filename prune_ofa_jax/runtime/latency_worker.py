"""One latency worker: a process that holds one model in one runtime and times it on request
(runtime/latency.py starts it and speaks to it; nothing else should).

  python -m prune_ofa_jax.runtime.latency_worker     (stdin: requests, stdout: replies)

Requests and replies are JSON lines. Requests: {"op": "load", "variant": {name, runtime,
path}, "threads": n}; {"op": "time", "feed": {batch, seq_len, seed, vocab_hi}, "warmup": w,
"calls": k} (w untimed calls, then k timed ones); {"op": "exit"}. Replies: {"ok": true, ...}
or {"ok": false, "error": "..."}. Anything a library prints goes to stderr, never into the
replies.

Runtimes: "ort" (an .onnx file in onnxruntime, every graph optimisation, `threads` intra-op
threads, 1 inter-op) and "torch" (an HF model dir in PyTorch under `torch.inference_mode`,
`threads` intra-op threads, 1 inter-op; the class is config.json's `architectures[0]`; a dir
without weights gets a seeded random init, which times the same). This module imports
neither runtime until a load asks for it, and never JAX.
"""

from __future__ import annotations

import inspect
import json
import os
import pathlib
import sys
import time

import numpy as np

from prune_ofa_jax.runtime import ort

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")


def make_feed(spec: dict) -> dict:
    """The int64 inputs every worker builds for the same spec: random token ids in
    [1000, vocab_hi) (seeded), a full attention mask, token type 0."""
    rng = np.random.default_rng(int(spec.get("seed", 0)))
    shape = (int(spec["batch"]), int(spec["seq_len"]))
    ids = rng.integers(1000, int(spec.get("vocab_hi", 20000)), shape).astype(np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids),
            "token_type_ids": np.zeros_like(ids)}


def _ort_call(path: str, threads: int):
    sess = ort.session(path, threads)
    names = {i.name for i in sess.get_inputs()}
    out = sess.get_outputs()[0].name

    def call(feed):
        sess.run([out], {k: v for k, v in feed.items() if k in names})
    return call


def _torch_call(path: str, threads: int):
    import torch  # pylint: disable=import-outside-toplevel
    import transformers  # pylint: disable=import-outside-toplevel
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set once in this process
        pass
    cfg = transformers.AutoConfig.from_pretrained(path)
    cls = getattr(transformers, (cfg.architectures or ["AutoModel"])[0])
    if any((pathlib.Path(path) / f).exists() for f in WEIGHT_FILES):
        model = cls.from_pretrained(path)
    else:
        torch.manual_seed(0)
        model = (transformers.AutoModel.from_config(cfg) if cls is transformers.AutoModel
                 else cls(cfg))
    model.eval()
    accepts = set(inspect.signature(model.forward).parameters)

    def call(feed):
        with torch.inference_mode():
            model(**{k: torch.from_numpy(v) for k, v in feed.items() if k in accepts})
    return call


LOADERS = {"ort": _ort_call, "torch": _torch_call}


class _Server:
    def __init__(self):
        self.call, self.name, self.feeds = None, "", {}

    def load(self, req: dict) -> dict:
        v, threads = req["variant"], int(req["threads"]) or os.cpu_count() or 1
        if v["runtime"] not in LOADERS:
            raise ValueError(f"runtime {v['runtime']!r} is not one of {sorted(LOADERS)}")
        t0 = time.perf_counter()
        self.call, self.name = LOADERS[v["runtime"]](v["path"], threads), v["name"]
        return {"load_s": time.perf_counter() - t0, "threads": threads}

    def time(self, req: dict) -> dict:
        if self.call is None:
            raise RuntimeError("time before load")
        key = json.dumps(req["feed"], sort_keys=True)
        feed = self.feeds.setdefault(key, make_feed(req["feed"]))
        for _ in range(int(req.get("warmup", 0))):
            self.call(feed)
        wall, cpu = [], []
        for _ in range(int(req.get("calls", 1))):
            c0, t0 = time.process_time(), time.perf_counter()
            self.call(feed)
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        return {"times_s": wall, "cpu_s": cpu}


def serve(inp, out) -> None:
    """Answers requests from `inp` on `out` until "exit" or the end of `inp`."""
    server = _Server()
    out.write(json.dumps({"ok": True, "pid": os.getpid()}) + "\n")
    out.flush()
    for line in inp:
        req = json.loads(line)
        if req.get("op") == "exit":
            break
        try:
            reply = {"ok": True, **getattr(server, req["op"])(req)}
        except Exception as e:  # pylint: disable=broad-except  (reported to the parent)
            reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()


def main() -> int:
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # library prints go to stderr
    sys.stdout = sys.stderr
    serve(sys.stdin, replies)
    return 0


if __name__ == "__main__":
    sys.exit(main())
