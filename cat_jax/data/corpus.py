"""A small real-audio corpus built offline from installed Debian packages (no downloads).

Sources, each skipped with a warning when its package is missing:
  speech: espeak-ng in several voices and languages, exact transcripts (task 'asr');
  words:  alsa-utils recorded words, transcripts from the file names ('asr');
  sounds: sound-theme-freedesktop ogg sounds, captions from the names ('caption');
  music:  MIDI written here, rendered by fluidsynth with the TimGM6mb soundfont ('caption');
  recorded: real human speech of three voices in four languages (asterisk-core-sounds, 16 kHz),
          exact transcripts ('asr'), with held-out splits (cat_jax/data/asterisk.py).
Writes the audio, sidecars (`x.txt` transcript, `x.caption.txt` caption), `manifest.jsonl` (the
training rows of every source: path relative to the folder, text, task), and the splits of the
recorded speech: `recorded_train.jsonl`, `val_file.jsonl` (held-out files of the training voices),
`val_voice.jsonl` (a voice and language never trained on). Deterministic for a given seed.
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import subprocess
import warnings

import numpy as np

from cat_jax.audio import load_audio
from cat_jax.data import asterisk
from cat_jax.data.manifest import read_manifest
from cat_jax.data.midi import Note, write_midi
from cat_jax.errors import ConfigError

ALSA_DIR = "/usr/share/sounds/alsa"
SOUNDS_DIR = "/usr/share/sounds/freedesktop/stereo"
SOUNDFONTS = ("/usr/share/sounds/sf2/TimGM6mb.sf2", "/usr/share/sounds/sf2/default-GM.sf2")
ALL_SOURCES = ("speech", "words", "sounds", "music", "recorded")
SPLIT_MANIFESTS = {"recorded_train": "train", "val_file": "val_file", "val_voice": "val_voice"}

# (espeak voice, language) and a few sentences per language; English also gets generated ones.
_VOICES = (("en-us", "en"), ("de", "de"), ("fr-fr", "fr"), ("en-gb", "en"), ("es", "es"), ("it", "it"),
           ("nl", "nl"))
_VARIANTS = ("", "+m3", "+f2", "+f4", "+m1")
_SENTENCES = {
    "de": ("Der Hund schläft unter dem alten Tisch.", "Heute regnet es in der ganzen Stadt.",
           "Wir fahren morgen früh mit dem Zug nach Berlin.", "Die Kinder spielen im Garten."),
    "fr": ("Le chat dort sur la chaise rouge.", "Nous allons au marché ce matin.",
           "Il fait très beau aujourd'hui à Paris.", "La musique commence à huit heures."),
    "es": ("El perro corre por la playa.", "Mañana vamos a visitar a mi abuela.",
           "La ciudad está llena de luces por la noche.", "Me gusta leer libros antiguos."),
    "it": ("Il treno parte alle nove e mezza.", "La pizza di mia nonna è la migliore.",
           "Oggi il cielo è sereno e blu.", "Gli studenti ascoltano la lezione."),
    "nl": ("De fiets staat naast het huis.", "Wij drinken koffie in de keuken.",
           "Het water in de gracht is koud.", "Morgen gaan we naar het strand."),
}
_ADJ = ("quick", "quiet", "bright", "old", "small", "heavy", "gentle", "red", "distant", "happy")
_NOUN = ("dog", "river", "teacher", "machine", "garden", "window", "train", "violin", "city", "bird")
_VERB = ("crosses", "watches", "follows", "finds", "paints", "hears", "carries", "opens", "builds", "visits")
_PLACE = ("near the station", "after the storm", "in the morning", "under the bridge", "every Sunday",
          "before dinner", "on the hill", "at the market")


def _english(rng: np.random.Generator) -> str:
  a, b = rng.choice(_ADJ, 2, replace=False)
  n1, n2 = rng.choice(_NOUN, 2, replace=False)
  return f"The {a} {n1} {rng.choice(_VERB)} the {b} {n2} {rng.choice(_PLACE)}."


def _write_sidecar(audio_path: str, text: str, task: str) -> None:
  stem = os.path.splitext(audio_path)[0]
  with open(stem + (".txt" if task == "asr" else ".caption.txt"), "w", encoding="utf-8") as f:
    f.write(text + "\n")


def _seconds(path: str) -> float:
  import soundfile as sf
  return sf.info(path).duration


def _speech(out: str, seconds: float, rng: np.random.Generator) -> list[dict]:
  """espeak-ng utterances, in order, until `seconds` of speech; every third one saved as FLAC."""
  import soundfile as sf
  os.makedirs(os.path.join(out, "speech"), exist_ok=True)
  rows, total, i = [], 0.0, 0
  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    while total < seconds:
      jobs = []
      for _ in range(4):  # synthesise four at a time, keep them in order
        voice, lang = _VOICES[i % len(_VOICES)]
        text = _english(rng) if lang == "en" else str(rng.choice(_SENTENCES[lang]))
        variant = _VARIANTS[int(rng.integers(len(_VARIANTS)))]
        speed, pitch = int(rng.integers(140, 191)), int(rng.integers(30, 71))
        wav = os.path.join(out, "speech", f"{i:04d}_{voice}.wav")
        cmd = ["espeak-ng", "-v", voice + variant, "-s", str(speed), "-p", str(pitch), "-w", wav, text]
        jobs.append((wav, text, lang, pool.submit(subprocess.run, cmd, check=True, capture_output=True)))
        i += 1
      for wav, text, lang, job in jobs:
        job.result()
        if total >= seconds:
          os.remove(wav)
          continue
        total += _seconds(wav)
        if len(rows) % 3 == 2:
          data, sr = sf.read(wav, dtype="int16")
          os.remove(wav)
          wav = wav[:-4] + ".flac"
          sf.write(wav, data, sr)
        rows.append({"path": os.path.relpath(wav, out), "text": text, "task": "asr", "source": "espeak",
                     "language": lang})
  return rows


def _words(out: str) -> list[dict]:
  """The alsa-utils recordings: spoken channel names ('Front_Left.wav' -> 'front left'); Noise is a caption."""
  rows = []
  os.makedirs(os.path.join(out, "words"), exist_ok=True)
  for name in sorted(os.listdir(ALSA_DIR)):
    if not name.endswith(".wav"):
      continue
    dst = os.path.join(out, "words", name)
    shutil.copyfile(os.path.join(ALSA_DIR, name), dst)
    words = name[:-4].replace("_", " ").lower()
    text, task = (("white noise", "caption") if words == "noise" else (words, "asr"))
    rows.append({"path": os.path.relpath(dst, out), "text": text, "task": task, "source": "alsa"})
  return rows


def _sounds(out: str) -> list[dict]:
  """Freedesktop theme sounds, captioned from their names ('dialog-warning.oga' -> 'dialog warning sound')."""
  rows = []
  os.makedirs(os.path.join(out, "sounds"), exist_ok=True)
  for name in sorted(os.listdir(SOUNDS_DIR)):
    if not name.endswith((".oga", ".ogg")):
      continue
    dst = os.path.join(out, "sounds", name)
    shutil.copyfile(os.path.join(SOUNDS_DIR, name), dst)
    words = os.path.splitext(name)[0].replace("-", " ")
    if words.startswith("audio channel "):
      text = f"a voice saying {words[len('audio channel '):]}"
    else:
      text = f"{words} sound"
    rows.append({"path": os.path.relpath(dst, out), "text": text, "task": "caption", "source": "freedesktop"})
  return rows


_SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
_KEYS = ("C", "D", "E", "F", "G", "A")
_KEY_PITCH = {"C": 60, "D": 62, "E": 64, "F": 65, "G": 67, "A": 69}
# (GM program, instrument words)
_LEADS = ((0, "piano"), (40, "violin"), (73, "flute"), (24, "acoustic guitar"), (56, "trumpet"), (11, "vibraphone"))
_PADS = ((48, "strings"), (19, "church organ"), (0, "piano"), (89, "warm synth pad"))


def _compose(rng: np.random.Generator, beats: int = 8) -> tuple[list[Note], dict[int, int], float, str]:
  """A short piece: melody over chords, sometimes with bass and drums. Returns notes, programs, bpm, caption."""
  key, mode = _KEYS[int(rng.integers(len(_KEYS)))], ("major", "minor")[int(rng.integers(2))]
  root, scale = _KEY_PITCH[key], _SCALES[mode]
  bpm = float(rng.choice((80, 100, 120, 140)))
  lead, pad = _LEADS[int(rng.integers(len(_LEADS)))], _PADS[int(rng.integers(len(_PADS)))]
  drums = bool(rng.integers(2))
  notes, t = [], 0.0
  while t < beats:  # melody: scale steps, eighth to half notes
    dur = float(rng.choice((0.5, 0.5, 1.0, 1.0, 2.0)))
    deg = int(rng.integers(0, 10))
    pitch = root + 12 * (deg // 7) + scale[deg % 7]
    notes.append(Note(t, min(dur, beats - t), pitch, int(rng.integers(80, 110)), 0))
    t += dur
  for bar in range(beats // 4):  # one triad per bar on degrees I, IV, V, vi
    deg = (0, 3, 4, 5)[int(rng.integers(4))]
    for k in (0, 2, 4):
      d = deg + k
      notes.append(Note(4.0 * bar, 4.0, root - 12 + 12 * (d // 7) + scale[d % 7], 60, 1))
    notes.append(Note(4.0 * bar, 4.0, root - 24 + scale[deg % 7], 70, 2))
  if drums:
    for b in range(beats * 2):
      notes.append(Note(0.5 * b, 0.25, 42, 60, 9))  # closed hi-hat
      if b % 4 == 0:
        notes.append(Note(0.5 * b, 0.5, 36, 100, 9))  # kick
      if b % 4 == 2:
        notes.append(Note(0.5 * b, 0.5, 38, 90, 9))  # snare
  programs = {0: lead[0], 1: pad[0], 2: 32}  # 32: acoustic bass
  caption = (f"{lead[1]} melody over {pad[1]} chords and bass in {key} {mode} at {int(bpm)} bpm"
             + (" with drums" if drums else ""))
  return notes, programs, bpm, caption


def _music(out: str, count: int, rng: np.random.Generator) -> list[dict]:
  """`count` pieces rendered by fluidsynth at 24 kHz stereo."""
  sf2 = next(p for p in SOUNDFONTS if os.path.exists(p))
  os.makedirs(os.path.join(out, "music"), exist_ok=True)
  pieces = []
  for i in range(count):
    notes, programs, bpm, caption = _compose(rng)
    mid = os.path.join(out, "music", f"{i:03d}.mid")
    write_midi(mid, notes, bpm=bpm, programs=programs)
    pieces.append((mid, mid[:-4] + ".wav", caption))
  cmds = [["fluidsynth", "-ni", "-q", "-g", "0.6", "-r", "24000", "-F", wav, sf2, mid] for mid, wav, _ in pieces]
  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    list(pool.map(lambda c: subprocess.run(c, check=True, capture_output=True, stdin=subprocess.DEVNULL), cmds))
  rows = []
  for mid, wav, caption in pieces:
    os.remove(mid)
    rows.append({"path": os.path.relpath(wav, out), "text": caption, "task": "caption", "source": "fluidsynth"})
  return rows


def _missing(source: str) -> str | None:
  """Why a source cannot be built here, or None."""
  if source == "speech":
    return None if shutil.which("espeak-ng") else "espeak-ng is not installed (apt-get install espeak-ng)"
  if source == "words":
    return None if os.path.isdir(ALSA_DIR) else f"{ALSA_DIR} not found (apt-get install alsa-utils)"
  if source == "sounds":
    return None if os.path.isdir(SOUNDS_DIR) else f"{SOUNDS_DIR} not found (apt-get install sound-theme-freedesktop)"
  if source == "music":
    if not shutil.which("fluidsynth"):
      return "fluidsynth is not installed (apt-get install fluidsynth)"
    if not any(os.path.exists(p) for p in SOUNDFONTS):
      return "no General MIDI soundfont found (apt-get install timgm6mb-soundfont)"
    return None
  if source == "recorded":
    return asterisk.missing()
  raise ValueError(f"unknown corpus source {source!r}; expected one of {ALL_SOURCES}")


def _write_manifest(path: str, rows: list[dict]) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    for row in rows:
      f.write(json.dumps(row, ensure_ascii=False) + "\n")
  os.replace(tmp, path)


def build_corpus(out_dir: str | os.PathLike, *, seconds_of_speech: float = 60.0, music_pieces: int = 6,
                 sources: tuple[str, ...] = ALL_SOURCES, seed: int = 0, recorded_max_files: int | None = None) -> str:
  """Builds the corpus in `out_dir` (replacing an earlier build there); returns the training manifest's
  path. `recorded_max_files` caps the recorded speech per language (tests)."""
  out = os.path.abspath(os.fspath(out_dir))
  for sub in ALL_SOURCES:
    shutil.rmtree(os.path.join(out, sub), ignore_errors=True)
  for name in SPLIT_MANIFESTS:
    if os.path.exists(os.path.join(out, name + ".jsonl")):
      os.remove(os.path.join(out, name + ".jsonl"))
  os.makedirs(out, exist_ok=True)
  rows = []
  for k, source in enumerate(sources):
    why = _missing(source)
    if why:
      warnings.warn(f"corpus: skipping {source}: {why}")
      continue
    rng = np.random.default_rng([seed, k])
    if source == "speech":
      rows += _speech(out, seconds_of_speech, rng)
    elif source == "words":
      rows += _words(out)
    elif source == "sounds":
      rows += _sounds(out)
    elif source == "recorded":
      rows += asterisk.build(out, max_files=recorded_max_files)
    else:
      rows += _music(out, music_pieces, rng)
  for row in rows:
    _write_sidecar(os.path.join(out, row["path"]), row["text"], row["task"])
  for name, split in SPLIT_MANIFESTS.items():
    recorded = [r for r in rows if r.get("split") == split]
    if recorded:
      _write_manifest(os.path.join(out, name + ".jsonl"), recorded)
  manifest = os.path.join(out, "manifest.jsonl")
  _write_manifest(manifest, [r for r in rows if r.get("split", "train") == "train"])
  return manifest


def ensure_corpus(manifest_path: str | os.PathLike) -> str:
  """The path of a corpus manifest (e.g. DIR/recorded_train.jsonl), building the corpus in DIR first
  when that manifest is missing (offline, about a minute and a half on two cores)."""
  path = os.path.abspath(os.fspath(manifest_path))
  name = os.path.basename(path)
  known = {"manifest.jsonl", *(n + ".jsonl" for n in SPLIT_MANIFESTS)}
  if name not in known:
    raise ConfigError(f"corpus:{manifest_path}: expected DIR/NAME with NAME one of {sorted(known)}")
  if not os.path.isfile(path):
    print(f"[corpus] building the bundled corpus in {os.path.dirname(path)} (offline, Debian packages)", flush=True)
    build_corpus(os.path.dirname(path))
    if not os.path.isfile(path):
      why = asterisk.missing() if name != "manifest.jsonl" else None
      raise ConfigError(f"corpus: {name} could not be built" + (f": {why}" if why else ""))
  return path


def validation_clips(manifest_path: str | os.PathLike, sample_rate: int, count: int = 26,
                     min_seconds: float = 1.5) -> list[tuple[str, np.ndarray]]:
  """A fixed evaluation set from a split manifest (e.g. val_voice.jsonl): `count` clips of speech
  at least `min_seconds` long (no near-silent files), spread evenly over the sorted list, loaded
  (C, T) at `sample_rate` mono. Returns (name, audio) pairs."""
  path = os.fspath(manifest_path)
  if not os.path.isfile(path):
    raise ConfigError(f"{path}: no such split manifest (build the corpus with `cat-jax make-corpus DIR`)")
  rows = sorted(read_manifest(path), key=lambda r: r["path"])
  clips = []
  for r in rows:
    if _seconds(r["path"]) < min_seconds:
      continue
    x = load_audio(r["path"], sample_rate, 1)
    if np.sqrt(np.mean(np.square(x, dtype=np.float64))) < 10 ** (-50 / 20):
      continue
    clips.append((os.path.splitext(os.path.basename(r["path"]))[0], x))
  step = max(1, len(clips) // count)
  return clips[::step][:count]
