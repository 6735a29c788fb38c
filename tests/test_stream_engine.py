"""StreamEngine: ragged streams joining and leaving fixed slots equal offline coding, with one
compiled program per chunk size, and clear errors."""
import numpy as np
import pytest

from cat_jax.errors import AudioError, CATError
from cat_jax.stream_engine import StreamEngine, StreamError

DR = 1920  # golden/tiny: 24 kHz mono, 80 ms frames


def _signal(n, seed):
  return (np.random.default_rng(seed).normal(size=n) * 0.1).astype(np.float32)


def _offline(model, x):
  codes = model.encode(x[None, None]).audio_codes[:, 0]
  return codes, model.decode(codes[:, None]).audio[0]


def _pieces(x, seed):
  """x cut into ragged pieces (0 to 1.7 frames, empty pieces included)."""
  rng = np.random.default_rng(seed)
  out, i = [], 0
  while i < x.size:
    n = int(rng.integers(0, int(1.7 * DR)))
    out.append(x[i:i + n])
    i += n
  return out


@pytest.mark.parametrize("k, shards, pipeline", [(1, 1, False), (2, 1, False), (1, 3, False), (1, 1, True),
                                               (2, 3, True)])
def test_ragged_streams_join_leave_equal_offline(tiny_model, k, shards, pipeline):
  """Five streams (lengths: partial last frames, exact frames, under one frame) through 3 slots:
  pushed in ragged pieces between steps, joining at different steps; one stream is closed mid-run
  and its slot reused by a new stream; one ends without waiting (end) and is closed later. With 3
  shards every slot is its own program call, run on threads, skipped when its slot has no work.
  Pipelined, each step decodes the codes of the step before (audio one step behind the codes)."""
  m = tiny_model
  lengths = {"a": 5 * DR + 300, "b": 6 * DR, "c": 7 * DR + 1000, "d": 1500, "e": 4 * DR + 1}
  sig = {n: _signal(t, i) for i, (n, t) in enumerate(lengths.items())}
  todo = {n: _pieces(x, 10 + i) for i, (n, x) in enumerate(sig.items())}
  eng = StreamEngine(m, capacity=3, chunk_frames=k, shards=shards, pipeline=pipeline)
  assert eng.shard_size == 3 // shards
  ids, codes, audio = {}, {n: [] for n in sig}, {n: [] for n in sig}
  join = {"a": 0, "b": 0, "c": 2, "d": None, "e": None}  # d, e take freed slots

  def pull(n):
    codes[n].append(eng.pull_codes(ids[n]))
    audio[n].append(eng.pull_audio(ids[n]))

  def finish(n):
    c, a = eng.close(ids[n])
    codes[n].append(c)
    audio[n].append(a)

  closed = set()
  for t in range(60):
    for n, at in join.items():
      if at == t:
        ids[n] = eng.open()
    for n in list(ids):
      if n in closed or not todo[n]:
        continue
      eng.push(ids[n], todo[n].pop(0))  # one ragged piece per stream and step
      if not todo[n] and n == "b":
        finish("b")  # closed mid-run: its slot is reused by d
        closed.add("b")
        ids["d"] = eng.open()
        assert eng.free_slots == 0  # a, c and d: d took b's slot
      elif not todo[n] and n == "a":
        eng.end(ids["a"])  # ends without waiting; e joins once a's slot is free
    eng.step()
    for n in ids:
      if n not in closed:
        pull(n)
    if "a" in ids and "a" not in closed and eng.done(ids["a"]):
      finish("a")
      closed.add("a")
      ids["e"] = eng.open()
      assert eng.free_slots == 0 and eng.steps > 2  # e took a's slot mid-run
    for n in ("c", "d", "e"):
      if n in ids and n not in closed and not todo[n]:
        finish(n)
        closed.add(n)
    if len(closed) == len(sig):
      break
  assert closed == set(sig)
  assert eng.free_slots == 3 and eng.streams == []
  for n, x in sig.items():
    want_c, want_a = _offline(m, x)
    got_c, got_a = np.concatenate(codes[n], -1), np.concatenate(audio[n], -1)
    np.testing.assert_array_equal(got_c, want_c, err_msg=n)
    assert got_a.shape == want_a.shape, n
    np.testing.assert_allclose(got_a, want_a, atol=1e-5, rtol=0, err_msg=n)
  assert eng.traces == (2 if pipeline else 1)


def test_pipelined_audio_one_step_behind(tiny_model):
  """Pipelined: the codes of a chunk come at its step, its audio at the next one (a step with
  nothing to encode still decodes), and they equal the coupled engine's."""
  x = _signal(3 * DR, 5)
  got = {}
  for pipeline in (False, True):
    eng = StreamEngine(tiny_model, capacity=1, pipeline=pipeline)
    sid = eng.open()
    eng.push(sid, x[:DR])
    assert eng.step() == 1
    c1, a1 = eng.pull_codes(sid), eng.pull_audio(sid)
    assert c1.shape[-1] == 1 and a1.shape[-1] == (0 if pipeline else DR)
    eng.push(sid, x[DR:])
    eng.step()
    eng.step()
    assert eng.ready() == (1 if pipeline else 0)  # pipelined: the last chunk's codes wait to be decoded
    c, a = eng.close(sid)
    got[pipeline] = (np.concatenate([c1, c], -1), np.concatenate([a1, a], -1))
    assert eng.step() == 0 and eng.traces == (2 if pipeline else 1)
  np.testing.assert_array_equal(got[True][0], got[False][0])
  np.testing.assert_allclose(got[True][1], got[False][1], atol=1e-6, rtol=0)
  assert got[True][1].shape == (1, 3 * DR)


def test_one_program_per_chunk_size(tiny_model):
  """Streams joining and leaving (slots reused, all slots busy, none busy) never retrace or
  recompile; another engine with the same shapes shares the program; each chunk size is traced once."""
  m = tiny_model
  sizes = []
  for k in (1, 2):
    for _ in range(2):  # a second engine of the same shapes compiles nothing
      eng = StreamEngine(m, capacity=3, chunk_frames=k)
      x = _signal(5 * DR + 77, k)
      sids = [eng.open(), eng.open(), eng.open()]
      eng.push(sids[0], x)
      eng.step()
      if hasattr(eng.program.call, "_cache_size"):
        sizes.append(eng.program.call._cache_size())
      eng.close(sids[0])
      s = eng.open()  # joins the freed slot
      eng.push(s, x[:DR * k + 5])
      eng.push(sids[1], x[:3])
      eng.step()
      eng.close(s)
      eng.close(sids[1])  # only 3 samples: one padded frame
      eng.close(sids[2])  # nothing pushed
      assert eng.step() == 0  # nothing to run: no call
      assert eng.traces == 1
      if hasattr(eng.program.call, "_cache_size"):
        assert eng.program.call._cache_size() == sizes[-1]
  if sizes:
    assert sizes[0] == sizes[1] and sizes[2] == sizes[3]


def test_errors(tiny_model):
  eng = StreamEngine(tiny_model, capacity=2)
  a, b = eng.open(), eng.open()
  with pytest.raises(StreamError, match="full: all 2 slots"):
    eng.open()
  with pytest.raises(AudioError, match="2 channel"):
    eng.push(a, np.zeros((2, 100), np.float32))
  with pytest.raises(AudioError, match=r"\(N,\) or \(1, N\)"):
    eng.push(a, np.zeros((1, 2, 100), np.float32))
  with pytest.raises(AudioError, match="NaN"):
    eng.push(a, np.full(10, np.nan))
  eng.close(b)
  for bad in (b, 99, "x"):
    with pytest.raises(StreamError, match="was closed" if bad == b else "unknown"):
      eng.push(bad, np.zeros(10, np.float32))
  with pytest.raises(StreamError, match="was closed"):
    eng.pull_codes(b)
  eng.end(a)
  with pytest.raises(StreamError, match="was ended"):
    eng.push(a, np.zeros(10, np.float32))
  c, au = eng.close(a)  # nothing pushed: no frames
  assert c.shape == (8, 0) and au.shape == (1, 0)
  assert issubclass(StreamError, CATError)
  with pytest.raises(StreamError, match="capacity"):
    StreamEngine(tiny_model, capacity=0)
  with pytest.raises(StreamError, match="shards must be a positive integer dividing the capacity 3"):
    StreamEngine(tiny_model, capacity=3, shards=2)
  with pytest.raises(CATError, match="chunk frames"):
    StreamEngine(tiny_model, capacity=1, chunk_frames=0)
