import json
import subprocess
import sys

from versatileffn.cli import main


def test_info_json_paper_counts(capsys):
    assert main(["info", "--preset", "paper-354m", "--ffn", "versatile", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] == 354_896_896 and info["params_over_dense"] == 184_320
    assert info["ffn_params"] == 15 * (3 * 1024 * 4096 + 1024 + 12 * 1024)


def test_info_console_entry_point_and_bad_kind():
    out = subprocess.run([sys.executable, "-m", "versatileffn.cli", "info", "--preset", "paper-720m", "--ffn", "moe",
                          "--json"], capture_output=True, text=True, check=True).stdout
    assert json.loads(out)["params"] == 1_145_670_144
    bad = subprocess.run([sys.executable, "-m", "versatileffn.cli", "info", "--ffn", "loop3"], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_cli_works_without_the_optional_extras():
    """A core install (no analysis/hf/data/logging extras): every subcommand still registers and runs its help."""
    blocked = ["matplotlib", "wordcloud", "transformers", "datasets", "pyarrow", "tensorboard", "lm_eval"]
    code = ("import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in blocked) +
            "from versatileffn.cli import build_parser, main\n"
            "names = sorted(build_parser()._subparsers._group_actions[0].choices)\n"
            "print(' '.join(names))\n"
            "for n in names:\n"
            "    try:\n"
            "        main([n, '--help'])\n"
            "    except SystemExit as e:\n"
            "        assert e.code == 0, n\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert {"analyze", "train", "eval", "info", "prepare-data", "convert", "bench"} <= set(out.stdout.split("\n")[0].split())
