"""Files that are never seen half-written, and directories that refuse another setup.

Every file kdjax writes for another process (or a later run) to read goes through `write_text` /
`write_json` / `write_bytes`: written under a temporary name unique to this host, process and
call, then renamed, so a reader (or a killed writer) never sees part of a file. `replace_dir`
does the same for a whole directory. `differences` is the one comparison behind "this directory
was made for another setup" (a run's workdir, a teacher cache, a generated set).
"""

import json
import os
import re
import shutil
import socket
import time
import uuid

HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"
# <name>.<host>.<pid>.<32 hex>.tmp
TMP_PATTERN = re.compile(
    r"^(?P<name>.+)\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.[0-9a-f]{32}\.tmp$")


def tmp_name(path: str | os.PathLike) -> str:
  """A temporary name beside `path`, unique to this host, process and call (several writers,
  possibly on several hosts of a shared file system, may write the same file)."""
  return f"{os.fspath(path)}.{HOST}.{os.getpid()}.{uuid.uuid4().hex}.tmp"


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
  """Atomically: a reader (or a killed writer) never sees half a file."""
  tmp = tmp_name(path)
  try:
    with open(tmp, "wb") as f:
      f.write(data)
    os.replace(tmp, path)
  finally:
    if os.path.lexists(tmp):
      os.remove(tmp)


def write_text(path: str | os.PathLike, text: str) -> None:
  write_bytes(path, text.encode())


def write_json(path: str | os.PathLike, obj, indent: int = 2) -> None:
  write_text(path, json.dumps(obj, indent=indent))


def read_json(path: str | os.PathLike):
  with open(path) as f:
    return json.load(f)


def as_json(obj):
  """`obj` as it reads back from JSON (tuples as lists): what a record compared on resume
  holds."""
  return json.loads(json.dumps(obj))


def replace_dir(tmp: str | os.PathLike, out: str | os.PathLike) -> None:
  """Moves the finished directory `tmp` to `out` (replacing an old `out`), so `out` is always
  either the old directory or the complete new one."""
  old = None
  if os.path.lexists(out):
    old = f"{os.fspath(out)}.old-{uuid.uuid4().hex[:8]}"
    os.replace(out, old)
  os.replace(tmp, out)
  if old is not None:
    shutil.rmtree(old, ignore_errors=True)


def _alive_here(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except OSError:  # e.g. PermissionError: it exists, as another user's process
    return True
  return True


def remove_stale_tmp(directory: str | os.PathLike, names=None, stale_s: float = 3600) -> list:
  """Deletes the temporary files (or directories) `tmp_name` made in `directory` whose writer is
  gone: a process no longer alive on this host, or one over `stale_s` old (a writer on another
  host sharing the directory). Those of live writers are left alone. `names`: a regex the file's
  own name must match (None: any). Returns the names removed."""
  removed = []
  if not os.path.isdir(directory):
    return removed
  now = time.time()
  for entry in os.listdir(directory):
    match = TMP_PATTERN.match(entry)
    if not match or (names is not None and not names.match(match["name"])):
      continue
    path = os.path.join(directory, entry)
    try:
      dead = match["host"] == HOST and not _alive_here(int(match["pid"]))
      if dead or now - os.lstat(path).st_mtime > stale_s:
        if os.path.isdir(path) and not os.path.islink(path):
          shutil.rmtree(path)
        else:
          os.remove(path)
        removed.append(entry)
    except OSError:  # gone already (another writer removed or renamed it), or not ours
      pass
  return removed


def differences(have: dict, want: dict, ignore=()) -> list[str]:
  """The keys whose values differ between two flat records (a key missing on one side differs),
  sorted; keys in `ignore` (or starting with "_") are not compared."""
  return sorted(k for k in set(have) | set(want)
                if k not in ignore and not str(k).startswith("_") and have.get(k) != want.get(k))
