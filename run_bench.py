#!/usr/bin/env python
"""Debiasing benchmark CLI. `python run_bench.py` runs the quick suite and writes its report;
`python run_bench.py -h` lists the commands."""
import sys

from bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
