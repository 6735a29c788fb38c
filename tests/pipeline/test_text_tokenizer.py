import numpy as np
import pytest

from cat_jax.data import text


def test_contract_ids():
  assert (text.PAD, text.BOS, text.EOS, text.TASK_ASR, text.TASK_CAPTION, text.VOCAB_SIZE) == (0, 1, 2, 3, 4, 264)
  ids, n = text.encode("Hi", "asr", 6)
  assert ids.dtype == np.int32 and ids.shape == (6,)
  assert ids.tolist() == [3, ord("H") + 8, ord("i") + 8, 2, 0, 0] and n == 4
  ids, n = text.encode("a", text.TASK_CAPTION, 3)
  assert ids.tolist() == [4, ord("a") + 8, 2] and n == 3


@pytest.mark.parametrize("s", ["hello world", "Mañana vamos à Paris, 東京 ✓", ""])
def test_round_trip(s):
  ids, n = text.encode(s, "caption", 128)
  assert n == len(s.encode("utf-8")) + 2
  assert int(ids.max()) < text.VOCAB_SIZE
  assert text.decode(ids) == s
  assert text.decode(ids[:n]) == s


def test_truncation_and_errors():
  ids, n = text.encode("abcdef", "asr", 4)
  assert n == 4 and ids.tolist() == [3, 97 + 8, 98 + 8, 99 + 8]  # cut before EOS
  assert text.decode(ids) == "abc"
  assert text.decode([3, 105, 2, 106]) == "a"  # stops at EOS
  with pytest.raises(ValueError):
    text.encode("x", "translate", 8)
  with pytest.raises(ValueError):
    text.encode("x", 5, 8)
