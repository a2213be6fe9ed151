"""SQuAD v1.1 examples from the official JSON format or TFDS (`squad/v1.1`).

Answer spans are checked against their context (context[answer_start:][:len(text)] == text).
A misaligned answer is, by the field's convention (BERT's run_squad), skipped with a count and a
log line (on_misaligned="skip", the default); on_misaligned="error" raises a DataError naming the
file and line instead. Training uses a question's first aligned answer and skips (counted,
logged) questions without one; evaluation scores against every gold answer text.
"""

import dataclasses
import json
import logging
import pathlib
from typing import List, Optional, Tuple

from prune_ofa_jax import paths
from prune_ofa_jax.data import common

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SquadExample:
    id: str
    title: str
    question: str
    context: str
    answer_texts: Tuple[str, ...]
    answer_starts: Tuple[int, ...]   # -1 where the answer did not align with the context

    def first_answer(self) -> Optional[Tuple[str, int]]:
        """(text, char start) of the first aligned answer, or None."""
        for text, start in zip(self.answer_texts, self.answer_starts):
            if start >= 0:
                return text, start
        return None


def default_dir() -> pathlib.Path:
    return paths.data_root() / "squad_v1.1"


def _line_of(raw: str, needle: str) -> Optional[int]:
    pos = raw.find(needle)
    return None if pos < 0 else raw.count("\n", 0, pos) + 1


def _get(obj, key, kind, path, raw, at: str, anchor: Optional[str] = None):
    if not isinstance(obj, dict) or key not in obj or not isinstance(obj[key], kind):
        line = _line_of(raw, anchor) if anchor else None
        raise common.DataError(f"{common.where(path, line)}: {at} needs a {kind.__name__} "
                               f"field {key!r}")
    return obj[key]


def load_json(path, on_misaligned: str = "skip") -> List[SquadExample]:
    """All questions of a SQuAD-format JSON file, in file order."""
    if on_misaligned not in ("skip", "error"):
        raise ValueError(f"on_misaligned must be 'skip' or 'error', got {on_misaligned!r}")
    raw = common.read_text(path)
    if not raw.strip():
        raise common.DataError(f"{path}: empty file")
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        raise common.DataError(f"{common.where(path, e.lineno)}: invalid JSON: {e.msg}") from e
    out, misaligned = [], 0
    for a, article in enumerate(_get(data, "data", list, path, raw, "the top level")):
        title = article.get("title", "") if isinstance(article, dict) else ""
        for p, para in enumerate(_get(article, "paragraphs", list, path, raw, f"data[{a}]")):
            at = f"data[{a}].paragraphs[{p}]"
            context = _get(para, "context", str, path, raw, at)
            for q, qa in enumerate(_get(para, "qas", list, path, raw, at)):
                qid = _get(qa, "id", str, path, raw, f"{at}.qas[{q}]")
                anchor = f'"{qid}"'
                question = _get(qa, "question", str, path, raw, f"question {qid}", anchor)
                texts, starts = [], []
                for ans in _get(qa, "answers", list, path, raw, f"question {qid}", anchor):
                    text = _get(ans, "text", str, path, raw, f"an answer of {qid}", anchor)
                    start = _get(ans, "answer_start", int, path, raw, f"an answer of {qid}", anchor)
                    if start < 0 or not text or context[start:start + len(text)] != text:
                        if on_misaligned == "error":
                            raise common.DataError(
                                f"{common.where(path, _line_of(raw, anchor))}: question {qid}: "
                                f"answer {text!r} is not at answer_start {start} of its context")
                        misaligned += 1
                        start = -1
                    texts.append(text)
                    starts.append(start)
                out.append(SquadExample(qid, title, question, context, tuple(texts), tuple(starts)))
    if not out:
        raise common.DataError(f"{path}: no questions")
    if misaligned:
        log.warning("%s: %d answer(s) not found at their answer_start; skipped for training",
                    path, misaligned)
    return out


def load_tfds(split: str, data_dir=None, name: str = "squad/v1.1") -> List[SquadExample]:
    """`tfds.data_source("squad/v1.1", split)` ("train" / "validation"; no TF needed)."""
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    src = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    out, misaligned = [], 0
    for i in range(len(src)):
        rec = src[i]
        context = _str(rec["context"])
        texts = [_str(t) for t in rec["answers"]["text"]]
        starts = [int(s) for s in rec["answers"]["answer_start"]]
        ok = [context[s:s + len(t)] == t for t, s in zip(texts, starts)]
        misaligned += ok.count(False)
        out.append(SquadExample(_str(rec["id"]), _str(rec.get("title", b"")), _str(rec["question"]),
                                context, tuple(texts),
                                tuple(s if good else -1 for s, good in zip(starts, ok))))
    if misaligned:
        log.warning("tfds %s[%s]: %d misaligned answer(s) skipped", name, split, misaligned)
    return out


def _str(v) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def gold_answers(examples: List[SquadExample]) -> dict:
    """id -> list of gold answer texts (all of them, aligned or not), for eval.squad_metrics."""
    return {ex.id: list(ex.answer_texts) for ex in examples}
