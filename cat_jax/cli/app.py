"""The `cat-jax` entry point: one parser built from the command modules, one persistent compile
cache, and the one place where a user error (missing file, bad audio, bad codes, corrupt
checkpoint: any CATError) becomes a single line on stderr, "cat-jax CMD: error: ...", and exit status 2."""
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


def quiet_accelerator_probes() -> dict[str, str]:
  """On a machine without TPU chips (no /dev/accel*, /dev/vfio/N), an installed libtpu (the `tpu`
  extra) would query the GCE metadata server, print its probe lines and write logs under the temp
  folder before every command: tell it not to, unless the user set these. -> what was set.
  Must run before JAX first touches a backend."""
  import glob
  if glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"):
    return {}
  quiet = {"TPU_SKIP_MDS_QUERY": "1", "TPU_MIN_LOG_LEVEL": "3", "TPU_STDERR_LOG_LEVEL": "3",
           "TPU_LOG_DIR": "disabled"}
  set_now = {k: v for k, v in quiet.items() if k not in os.environ}
  os.environ.update(set_now)
  return set_now


def main(argv=None) -> int:
  """Runs one subcommand: 0 on success, 2 on a user error (one line), argparse's 2 on bad flags."""
  args = build_parser().parse_args(argv)
  quiet_accelerator_probes()
  use_compile_cache()
  try:
    return args.func(args)
  except CATError as e:
    print(f"cat-jax {args.command}: error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
