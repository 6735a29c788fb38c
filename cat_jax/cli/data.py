"""`cat-jax prepare | make-corpus`: decode a source once into ArrayRecord shards for training;
build the bundled real-audio corpus offline."""
from __future__ import annotations

from cat_jax.data import records
from cat_jax.data.corpus import build_corpus
from cat_jax.data.prepare import prepare


def register(sub) -> None:
  """`prepare SRC OUT --shards N [--sample-rate --channels]` and `make-corpus OUT`."""
  p = sub.add_parser("prepare", help="decode a source into ArrayRecord shards for training",
                     description=prepare.__doc__)
  p.add_argument("src", help="folder:PATH | tfds:NAME[:SPLIT] | arrayrecord:GLOB | a folder")
  p.add_argument("out", help="output folder (shards + info.json)")
  p.add_argument("--shards", type=int, default=1)
  p.add_argument("--sample-rate", type=int, default=24000)
  p.add_argument("--channels", type=int, default=1)
  p.add_argument("--dtype", choices=records.DTYPES, default="int16")
  p.add_argument("--data-dir", default=None, help="TFDS data_dir for tfds: sources")
  p.set_defaults(func=run_prepare)
  c = sub.add_parser("make-corpus", help="build a real-audio corpus offline (espeak-ng, "
                     "alsa-utils, freedesktop sounds, fluidsynth music, asterisk recorded speech with "
                     "held-out splits)")
  c.add_argument("out")
  c.add_argument("--seconds-of-speech", type=float, default=60.0)
  c.add_argument("--music-pieces", type=int, default=6)
  c.add_argument("--seed", type=int, default=0)
  c.add_argument("--recorded-max-files", type=int, default=None,
                 help="at most this many asterisk recordings per language (default: all)")
  c.set_defaults(func=run_make_corpus)


def run_prepare(args) -> int:
  info = prepare(args.src, args.out, shards=args.shards, sample_rate=args.sample_rate, channels=args.channels,
                 dtype=args.dtype, data_dir=args.data_dir)
  print(f"wrote {info['num_records']} clips ({info['seconds']:.1f} s) to {len(info['shards'])} shards in "
        f"{args.out}; skipped {sum(info['skipped'].values())} {info['skipped'] or ''}")
  return 0


def run_make_corpus(args) -> int:
  manifest = build_corpus(args.out, seconds_of_speech=args.seconds_of_speech, music_pieces=args.music_pieces,
                          seed=args.seed, recorded_max_files=args.recorded_max_files)
  with open(manifest, encoding="utf-8") as f:
    n = sum(1 for _ in f)
  print(f"wrote {n} clips and {manifest}")
  return 0
