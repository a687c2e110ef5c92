"""Benchmark suite entry point: ``python benchmarks/bench_ffn.py [--quick] [--out FILE]``.

Same as ``versatileffn bench``; see versatileffn/bench/ for what is measured and how.
"""
import sys

from versatileffn.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
