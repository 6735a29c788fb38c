"""The `cat-jax` command line, on top of the library: every subcommand's arguments, and the one
place (`app.main`) where a CATError becomes one line and exit status 2. Library modules never
import this package.

  app.py        the entry point: the parser, the compile cache, error lines and exit codes
  coding.py     encode, decode, reconstruct (long files in exact streaming chunks)
  models.py     convert (reference layout <-> Orbax params), export (a training run -> reference layout)
  data.py       prepare (ArrayRecord shards), make-corpus (the bundled real-audio corpus)
  streaming.py  stream-encode, stream-decode
  evaluate.py   eval (the paper's metrics over codebook counts, beside classic codecs)
  plot.py       plot (a run's learning curves)
"""
from cat_jax.cli.app import main, use_compile_cache

__all__ = ["main", "use_compile_cache"]
