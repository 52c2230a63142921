"""The `learnkit` command line, one package: `main.py` (the parser, `main`, `datasets`), `demo.py` (`demo`),
`train.py` (`train`, `lr-find`, `predict` for text CSVs) and `vision.py` (their image-folder half), over three
shared modules: `args.py` (the one error class `CliError` and the argument parsers), `record.py` (the run record,
`run.json`). It imports from the library, never the other way round.
"""
from learnkit.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
