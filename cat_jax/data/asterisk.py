"""Real human speech with transcripts from Debian's asterisk-core-sounds packages (offline).

Three professional voices: Allison (en, es; female), Carlo (it; male), IvrvoiceRU (ru; female),
16 kHz G.722 decoded with ffmpeg to FLAC, transcripts from `core-sounds-LANG.txt.gz`. Splits:
one voice is held out entirely (`val_voice`: a speaker and language the model never hears),
and a fixed share of the other voices' files (`val_file`). French and the asterisk-prompt
packages are deliberately not used (quality is judged on voices outside the corpus).
"""
from __future__ import annotations

import concurrent.futures
import gzip
import hashlib
import os
import shutil
import subprocess

SOUNDS_ROOT = "/usr/share/asterisk/sounds"
DOC_ROOT = "/usr/share/doc"
# language -> (voice folder, speaker id)
VOICES = {"en": ("en_US_f_Allison", "allison"), "es": ("es_MX_f_Allison", "allison"),
          "it": ("it_IT_m_Carlo", "carlo"), "ru": ("ru_RU_f_IvrvoiceRU", "ivrvoice_ru")}
HELD_OUT_SPEAKER = "ivrvoice_ru"  # val_voice: never trained on
VAL_FILE_PERCENT = 5  # of the training voices' files, chosen by a hash of the name


def transcripts(lang: str) -> dict[str, str]:
  """name -> text from core-sounds-LANG.txt.gz (`name: text` lines; ';' comments). Descriptions
  in brackets ('[ascending tones]', '(1 second of silence)') are not speech and are left out."""
  path = os.path.join(DOC_ROOT, f"asterisk-core-sounds-{lang}", f"core-sounds-{lang}.txt.gz")
  out = {}
  with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
    for line in f:
      line = line.strip()
      if not line or line.startswith(";") or ":" not in line:
        continue
      name, text = line.split(":", 1)
      text = " ".join(text.split())
      if text and not text.startswith(("[", "(")):
        out[name.strip()] = text
  return out


def missing(languages=tuple(VOICES)) -> str | None:
  """Why the recorded speech cannot be built here, or None."""
  if not shutil.which("ffmpeg"):
    return "ffmpeg is not installed (apt-get install ffmpeg)"
  for lang in languages:
    voice = os.path.join(SOUNDS_ROOT, VOICES[lang][0])
    if not os.path.isdir(voice):
      return f"{voice} not found (apt-get install asterisk-core-sounds-{lang}-g722)"
    if not os.path.isfile(os.path.join(DOC_ROOT, f"asterisk-core-sounds-{lang}", f"core-sounds-{lang}.txt.gz")):
      return f"transcripts of {lang} not found (apt-get install asterisk-core-sounds-{lang})"
  return None


def split_of(speaker: str, name: str) -> str:
  """'val_voice' for the held-out speaker, else 'val_file' for ~VAL_FILE_PERCENT % of names, else 'train'."""
  if speaker == HELD_OUT_SPEAKER:
    return "val_voice"
  h = int(hashlib.sha1(f"{speaker}/{name}".encode()).hexdigest(), 16) % 100
  return "val_file" if h < VAL_FILE_PERCENT else "train"


def _decode(src: str, dst: str) -> None:
  subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-f", "g722", "-i", src,
                  "-c:a", "flac", dst], check=True, capture_output=True)


def build(out: str, languages=tuple(VOICES), max_files: int | None = None) -> list[dict]:
  """Decodes every transcribed file of `languages` into out/recorded/LANG/; rows carry `split`,
  `speaker` and `language`. `max_files` per language (sorted by name) shrinks it for tests."""
  rows, jobs = [], []
  for lang in languages:
    folder, speaker = VOICES[lang]
    texts = transcripts(lang)
    root = os.path.join(SOUNDS_ROOT, folder)
    names = sorted(n for n in texts if os.path.isfile(os.path.join(root, n + ".g722")))
    if max_files is not None:
      names = names[:max_files]
    for name in names:
      rel = os.path.join("recorded", lang, name.replace("/", "__") + ".flac")
      jobs.append((os.path.join(root, name + ".g722"), os.path.join(out, rel)))
      rows.append({"path": rel, "text": texts[name], "task": "asr", "source": "asterisk", "language": lang,
                   "speaker": speaker, "split": split_of(speaker, name)})
  for lang in languages:
    os.makedirs(os.path.join(out, "recorded", lang), exist_ok=True)
  with concurrent.futures.ThreadPoolExecutor(max(2, os.cpu_count() or 2)) as pool:
    list(pool.map(lambda j: _decode(*j), jobs))
  return rows
