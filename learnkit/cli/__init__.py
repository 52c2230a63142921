"""The `learnkit` command line: `main.py` (the parser, `demo`, `datasets`), `train.py` (`train`, `lr-find`,
`predict`), `vision.py` (image folders). It imports from the library, never the other way round."""
from learnkit.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
