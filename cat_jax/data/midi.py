"""A tiny Standard MIDI File (format 0) writer: enough to render test music with fluidsynth."""
from __future__ import annotations

import dataclasses
import struct


@dataclasses.dataclass(frozen=True)
class Note:
  """One note; times in beats (quarter notes), pitch/velocity 0..127, channel 0..15 (9 = drums)."""
  start: float
  duration: float
  pitch: int
  velocity: int = 90
  channel: int = 0


def _vlq(n: int) -> bytes:
  """MIDI variable-length quantity: 7 bits per byte, high bit set on all but the last."""
  out = [n & 0x7F]
  n >>= 7
  while n:
    out.append(0x80 | (n & 0x7F))
    n >>= 7
  return bytes(reversed(out))


def midi_bytes(notes: list[Note], *, bpm: float = 120.0, programs: dict[int, int] | None = None,
               ticks_per_beat: int = 480) -> bytes:
  """A format-0 SMF: tempo, one program change per channel (`programs` channel -> GM program), notes."""
  events = [(0, 0, struct.pack(">BBB", 0xFF, 0x51, 3) + int(round(60e6 / bpm)).to_bytes(3, "big"))]
  for ch, prog in sorted((programs or {}).items()):
    events.append((0, 1, bytes([0xC0 | ch, prog & 0x7F])))
  for n in notes:
    on = int(round(n.start * ticks_per_beat))
    off = max(on + 1, int(round((n.start + n.duration) * ticks_per_beat)))
    events.append((on, 3, bytes([0x90 | n.channel, n.pitch & 0x7F, n.velocity & 0x7F])))
    events.append((off, 2, bytes([0x80 | n.channel, n.pitch & 0x7F, 0])))  # offs before ons at a tick
  events.sort(key=lambda e: (e[0], e[1]))
  track, now = bytearray(), 0
  for tick, _, msg in events:
    track += _vlq(tick - now) + msg
    now = tick
  track += _vlq(ticks_per_beat) + bytes([0xFF, 0x2F, 0x00])  # a beat of tail, then end of track
  header = b"MThd" + struct.pack(">IHHH", 6, 0, 1, ticks_per_beat)
  return header + b"MTrk" + struct.pack(">I", len(track)) + bytes(track)


def write_midi(path: str, notes: list[Note], **kw) -> None:
  with open(path, "wb") as f:
    f.write(midi_bytes(notes, **kw))
