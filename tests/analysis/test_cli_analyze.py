"""`versatileffn analyze` end to end: PNGs, the self-contained HTML report, analysis.json, inputs, errors."""
import base64
import json
import re
import sys

import numpy as np
import pytest

from versatileffn.cli import main
from versatileffn.ffn import ffn_config_from_name
from versatileffn.data.tokens import token_dtype, write_index, write_split
from versatileffn.io import save_model
from versatileffn.model import VersatileLM, model_config

from analysis_fixtures import SENTENCES, forced_model

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _strict_json(text: str):
    def reject(name):
        raise ValueError(f"non-standard JSON constant {name}")
    return json.loads(text, parse_constant=reject)


@pytest.fixture
def model_dir(tmp_path, tokenizer, cat_id):
    return save_model(forced_model(cat_id, loops_cat=4, loops_other=2), tmp_path / "model", tokenizer=tokenizer)


@pytest.mark.plotting
@pytest.mark.olmo_eval
def test_analyze_writes_pngs_html_and_json(tmp_path, model_dir, capsys):
    from PIL import Image  # comes with matplotlib (the analysis extra)

    txt = tmp_path / "text.txt"
    txt.write_text("\n".join(SENTENCES[:4]))
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": s}) for s in SENTENCES[4:]) + "\n")
    out = tmp_path / "report"
    rc = main(["analyze", "--model", str(model_dir), "--data", str(txt), str(jsonl), "--out", str(out),
               "--seq-len", "16", "--layer", "1", "--tasks", "arc_easy,piqa", "--task-limit", "3", "--caps", "1,2,none",
               "--heatmap-positions", "12", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    result = _strict_json((out / "analysis.json").read_text())
    expected = {"loops_per_layer", "loop_histogram", "lambda_distribution", "expert_load", "loops_vs_position",
                "cos_sample_heatmap", "cos_layers_positions", "cos_per_layer", "wordcloud_low_lambda",
                "wordcloud_high_lambda", "loop_cap_sweep"}
    assert set(result["figures"]) == expected
    html = (out / "report.html").read_text()
    embedded = dict(re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"[^>]*data-file="([^"]+)"', html))
    embedded = {name: data for data, name in embedded.items()}
    for key, name in result["figures"].items():
        png = (out / name).read_bytes()
        assert png.startswith(PNG_SIGNATURE), name
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100
        assert base64.b64decode(embedded[name]) == png, f"{name} is not embedded in report.html"
    # the numbers: two sources, the forced model's statistics, the sweep with real validation and benchmarks
    assert [s["kind"] for s in result["data"]["sources"]] == ["txt", "jsonl"]
    assert result["data"]["sources"][1]["documents"] == len(SENTENCES) - 4
    assert all(set(r["lambda_histogram"]) == {"0", "0.5"} for r in result["layers"])
    assert result["word_cloud"]["layer"] == 1 and result["word_cloud"]["low"][0]["token"] == "cat"
    assert len(result["cos_sample"]["matrix"]) == 12
    sweep = result["loop_cap_sweep"]
    assert [r["cap"] for r in sweep] == [1, 2, None]
    assert [r["mean_loops_per_layer"][0] for r in sweep][:2] == [1.0, 2.0]  # the cap reaches every token
    assert 2.0 < sweep[2]["mean_loops_per_layer"][0] < 4.0  # uncapped: 2 loops, 4 for "cat"
    for r in sweep:
        assert set(r["tasks"]) == {"arc_easy", "piqa"} and 0 <= r["accuracy"] <= 1
        assert r["val_tokens"] > 0 and np.isfinite(r["val_loss"]) and r["task_ffn_flops_per_token"] > 0
    assert sweep[0]["ffn_flops_per_token"] < sweep[1]["ffn_flops_per_token"]
    assert "cat</td>" in html and "loop cap" in html


@pytest.mark.plotting
def test_analyze_reads_a_prepared_token_folder(tmp_path, model_dir, tokenizer):
    ids = np.asarray([t for s in SENTENCES for t in (*tokenizer.encode(s), tokenizer.eos_id)])
    data = tmp_path / "tokens"
    index = {"tokenizer": tokenizer.name, "vocab_size": tokenizer.vocab_size, "eos_id": tokenizer.eos_id,
             "dtype": token_dtype(tokenizer.vocab_size).name}
    write_split(data, "val", ids, documents=len(SENTENCES), n_bytes=sum(len(s) for s in SENTENCES), index=index)
    write_index(data, index)
    out = tmp_path / "out"
    rc = main(["analyze", "--model", str(model_dir), "--data", str(data), "--out", str(out), "--no-sweep",
               "--seq-len", "16", "--max-tokens", "100", "--quiet"])
    assert rc == 0
    result = _strict_json((out / "analysis.json").read_text())
    assert result["data"]["tokens"] == 96 and result["data"]["sequences"] == 6  # 100 tokens -> 6 rows of 16
    assert result["loop_cap_sweep"] is None and "loop_cap_sweep" not in result["figures"]
    assert result["layers"][0]["tokens"] == 96


@pytest.mark.plotting
def test_clear_errors(tmp_path, tokenizer, model_dir, capsys):
    txt = tmp_path / "t.txt"
    txt.write_text(SENTENCES[0])
    dense = save_model(VersatileLM(model_config("micro", ffn_config_from_name("dense"))), tmp_path / "dense",
                       tokenizer=tokenizer)
    cases = [
        (["--model", str(dense)], "no VersatileFFN layers"),
        (["--model", str(model_dir), "--layer", "5"], "--layer 5 is out of range"),
        (["--model", str(tmp_path / "missing")], "no config.json"),
        (["--model", str(model_dir), "--data", str(tmp_path / "nope.txt")], "not found"),
    ]
    for args, message in cases:
        argv = ["analyze", "--data", str(txt), "--out", str(tmp_path / "o"), "--no-sweep", "--quiet", *args]
        assert main(argv) == 2, args
        assert message in capsys.readouterr().err


def test_missing_analysis_extra_is_one_clear_message(tmp_path, model_dir, capsys, monkeypatch):
    txt = tmp_path / "t.txt"
    txt.write_text(SENTENCES[0])
    monkeypatch.setitem(sys.modules, "wordcloud", None)  # as if the analysis extra were not installed
    argv = ["analyze", "--model", str(model_dir), "--data", str(txt), "--out", str(tmp_path / "o"), "--quiet"]
    assert main(argv) == 2
    assert "pip install 'versatileffn[analysis]'" in capsys.readouterr().err
    assert not (tmp_path / "o" / "analysis.json").exists()  # it stopped before any work
