"""The `cat-jax` entry point: one parser built from the command modules, one persistent compile
cache, and the one place where a user error (missing file, bad audio, bad codes, corrupt
checkpoint: any CATError) becomes a single line naming the problem and exit status 2."""
from __future__ import annotations

import argparse
import os
import sys

import jax

from cat_jax.cli import coding, data, evaluate, models, plot, streaming
from cat_jax.errors import CATError

DESCRIPTION = ("`cat-jax` command line: encode, decode, reconstruct, convert, export, and prepare, "
               "make-corpus, stream-encode/decode, eval, plot")
COMMAND_GROUPS = (coding, models, data, streaming, evaluate, plot)  # each adds its subcommands, in this order

# How each command has always printed its error line (scripts may read it): "cat-jax CMD: error: ..."
# on stderr, except these commands' bare "error: ...", which `prepare` prints on stdout.
BARE_ERROR_LINE = frozenset({"prepare", "stream-encode", "stream-decode", "eval"})
ERROR_ON_STDOUT = frozenset({"prepare"})


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="cat-jax", description=DESCRIPTION)
  sub = p.add_subparsers(dest="command", required=True)
  for group in COMMAND_GROUPS:
    group.register(sub)
  return p


def use_compile_cache() -> str | None:
  """Keeps compiled encode/decode programs across runs in $XDG_CACHE_HOME/cat_jax/xla (a large model's
  unrolled CPU program takes seconds per length bucket to compile). JAX_COMPILATION_CACHE_DIR, if
  set, wins; CAT_JAX_COMPILE_CACHE=0 turns it off."""
  if os.environ.get("CAT_JAX_COMPILE_CACHE") == "0" or jax.config.jax_compilation_cache_dir:
    return jax.config.jax_compilation_cache_dir
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  path = os.path.join(base, "cat_jax", "xla")
  try:
    os.makedirs(path, exist_ok=True)
  except OSError:
    return None  # read-only home: compile every time
  jax.config.update("jax_compilation_cache_dir", path)
  return path


def main(argv=None) -> int:
  """Runs one subcommand: 0 on success, 2 on a user error (one line), argparse's 2 on bad flags."""
  args = build_parser().parse_args(argv)
  use_compile_cache()
  try:
    return args.func(args)
  except CATError as e:
    prefix = "" if args.command in BARE_ERROR_LINE else f"cat-jax {args.command}: "
    print(f"{prefix}error: {e}", file=sys.stdout if args.command in ERROR_ON_STDOUT else sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
