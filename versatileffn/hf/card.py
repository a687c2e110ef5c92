"""The ``README.md`` model card written into every Hugging Face folder versatileffn saves (``save_converted``,
``export_dense``, ``export_native``): what the model is (architecture, VersatileFFN's N / K / L_max, parameters),
what it saw (the training run's data and tokens, when the folder comes from a run) and what is known of its
quality (the run's validation loss, evaluation results when given). Facts only: a field that is not known is left
out, never guessed.
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml

CARD_FILE = "README.md"


def _run_facts(source: Path | None) -> dict:
    """Data and tokens of the training run whose ``final/`` folder is ``source`` (its parent holds config.yaml and
    metrics.jsonl); {} for anything else."""
    if source is None or not (source.parent / "metrics.jsonl").is_file():
        return {}
    facts = {}
    try:
        cfg = yaml.safe_load((source.parent / "config.yaml").read_text()) or {}
        facts["data"] = (cfg.get("data") or {}).get("path")
    except (OSError, yaml.YAMLError, AttributeError):
        pass
    try:
        for line in (source.parent / "metrics.jsonl").read_text().splitlines():
            rec = json.loads(line) if line.strip() else {}
            if rec.get("kind") == "train":
                facts["tokens"], facts["steps"] = rec.get("tokens"), rec.get("step")
    except (OSError, json.JSONDecodeError, AttributeError):
        pass
    return {k: v for k, v in facts.items() if v is not None}


def model_card(model, source: Path | str | None = None, meta: dict | None = None, evals: dict | None = None) -> str:
    """The card's Markdown for a transformers model (converted VersatileFFN or dense)."""
    c = model.config
    name = (getattr(c, "architectures", None) or [type(model).__name__])[0]
    ffn = getattr(c, "versatile_ffn", None)
    versatile = ffn is not None
    n_params = sum(p.numel() for p in model.parameters())
    source = Path(source) if source is not None else None
    lines = ["---", "library_name: transformers", "pipeline_tag: text-generation",
             "tags:", "- versatileffn", *(["- mixture-of-experts", "- adaptive-depth"] if versatile else []), "---", "",
             f"# {name}", ""]
    if versatile:
        layers = model.versatile_layers()
        f = layers[0].config
        lines += [f"A {c.base_model_type} decoder whose FFN sublayers are VersatileFFN (arXiv 2512.14531): a width "
                  "path of virtual experts and a depth path that repeats the FFN a per-token number of times, both "
                  "reusing one SwiGLU FFN per layer. Written by the `versatileffn` package.", ""]
    else:
        lines += [f"A dense {c.model_type} decoder written by the `versatileffn` package.", ""]
    lines += ["## Architecture", "", "| | |", "|---|---|", f"| class | `{name}` (model_type `{c.model_type}`) |",
              f"| parameters | {n_params:,} |", f"| layers | {c.num_hidden_layers} |",
              f"| hidden size / FFN size | {c.hidden_size} / {c.intermediate_size} |",
              f"| attention heads (KV heads) | {c.num_attention_heads} ({getattr(c, 'num_key_value_heads', None)}) |",
              f"| vocabulary / context | {c.vocab_size} / {c.max_position_embeddings} |"]
    if versatile:
        lines += [f"| virtual experts N / top-K / expert width | {f.n_experts} / {f.top_k} / {f.expert_dim} |",
                  f"| max loops L_max | {f.max_loops} |", f"| mode | {f.mode} |"]
        if f.dense_preserving:
            lines += ["| start | dense-preserving (a deviation from the paper) |"]
    run = _run_facts(source)
    lines += ["", "## Training data", ""]
    if run:
        lines += [f"- data: `{run['data']}`" if "data" in run else "- data: not recorded",
                  *([f"- tokens seen: {run['tokens']:,} ({run['steps']} optimizer steps)"] if "tokens" in run else [])]
    else:
        lines += ["Not recorded in this folder" + (f" (source: `{source}`)." if source is not None else ".")]
    results = dict(evals or {})
    val = (meta or {}).get("val") if isinstance(meta, dict) else None
    if isinstance(val, dict) and "val_loss" in val:
        results["validation loss (training run)"] = round(float(val["val_loss"]), 4)
    if results:
        lines += ["", "## Evaluation", "", "| metric | value |", "|---|---|",
                  *(f"| {k} | {v} |" for k, v in results.items())]
    lines += ["", "## Use", "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
              "tok = AutoTokenizer.from_pretrained(PATH)",
              f"model = AutoModelForCausalLM.from_pretrained(PATH{', trust_remote_code=True' if versatile else ''})",
              "```", ""]
    if versatile:
        lines += ["The modeling code is in this folder (`trust_remote_code=True`, no extra package needed); with "
                  "`versatileffn` installed and imported, the plain call works too. "
                  "lm-evaluation-harness: `lm_eval --model hf --model_args pretrained=PATH,trust_remote_code=True`.",
                  ""]
    if source is not None:
        lines += [f"Source: `{source}`.", ""]
    return "\n".join(lines)


def write_model_card(folder: str | Path, model, source=None, meta: dict | None = None, evals: dict | None = None
                     ) -> Path:
    path = Path(folder) / CARD_FILE
    path.write_text(model_card(model, source, meta, evals))
    return path


__all__ = ["model_card", "write_model_card", "CARD_FILE"]
