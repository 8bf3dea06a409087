"""kdjax.files: atomic writes leave the old or the new file, never a part; temporary names parse
back to their file, host and process; directories are replaced whole; setups compare by key."""

import os

import pytest

from kdjax import files


def test_write_json_replaces_atomically_and_leaves_no_temporary(tmp_path):
  path = tmp_path / "a.json"
  files.write_json(path, {"x": 1})
  files.write_json(path, {"x": 2})
  assert files.read_json(path) == {"x": 2}
  assert os.listdir(tmp_path) == ["a.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
  path = tmp_path / "a.txt"
  files.write_text(path, "old")

  def fail(src, dst):
    raise OSError("disk full")

  monkeypatch.setattr(os, "replace", fail)
  with pytest.raises(OSError):
    files.write_text(path, "new")
  assert path.read_text() == "old" and os.listdir(tmp_path) == ["a.txt"]


def test_temporary_names_parse_back():
  name = os.path.basename(files.tmp_name("/x/shard-00003.array_record"))
  match = files.TMP_PATTERN.match(name)
  assert (match["name"], match["host"], int(match["pid"])) == (
      "shard-00003.array_record", files.HOST, os.getpid())
  other = files.TMP_PATTERN.match("cache.json.node-7.12.0123456789abcdef0123456789abcdef.tmp")
  assert (other["name"], other["host"], other["pid"]) == ("cache.json", "node-7", "12")


def test_replace_dir_swaps_whole_directories(tmp_path):
  out, new = tmp_path / "out", tmp_path / "new"
  out.mkdir()
  (out / "old.txt").write_text("old")
  new.mkdir()
  (new / "new.txt").write_text("new")
  files.replace_dir(new, out)
  assert os.listdir(out) == ["new.txt"] and sorted(os.listdir(tmp_path)) == ["out"]


def test_differences_lists_changed_missing_and_added_keys_but_not_private_ones():
  have = {"a": 1, "b": 2, "c": 3, "_time": 1.0}
  want = {"a": 1, "b": 5, "d": 4, "_time": 2.0}
  assert files.differences(have, want) == ["b", "c", "d"]
  assert files.differences(have, want, ignore=("b",)) == ["c", "d"]
