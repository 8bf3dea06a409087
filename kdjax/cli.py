"""What `python -m kdjax.main` and `python -m kdjax.generate` share: flag parsing that reports a
bad `--config.x=y` in one line, and the mapping of kdjax's errors to exit statuses (errors.py).

Bad input never shows a traceback: the one line names the key, the value or the file, and the
fix. Anything else (a bug) keeps its traceback.
"""

import difflib
import re
import sys

from absl import app, flags

from kdjax import configlib, errors

_KINDS = {"int": "an int", "float": "a float", "bool": "a bool", "str": "a string",
          "tuple": "a tuple", "list": "a list"}


def _load_config():
  """The config that `--config=FILE[:ARG]` names, loaded again (absl keeps nothing of a parse
  that failed), for the message; None if it cannot be loaded."""
  spec = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--config=")), None)
  if spec is None:
    return None
  path, _, arg = spec.partition(".py:")
  path = path if path.endswith(".py") else path + ".py"
  try:
    module = configlib.load_file(path, "_kdjax_config_for_message")
    return module.get_config(arg) if arg else module.get_config()
  except Exception:  # noqa: BLE001  (only for a better message: the original error stands)
    return None


def _unknown_key(message: str) -> str:
  """'no such key' with the closest real keys."""
  line = f"config error: no such key {message}"
  config = _load_config()
  if config is None:
    return line
  keys = list(configlib.flatten(config.to_dict()))
  wanted = [a.split("=")[0][len("--config."):] for a in sys.argv[1:]
            if a.startswith("--config.")]
  bad = [w for w in wanted if w not in keys]
  close = difflib.get_close_matches(bad[0], keys, n=3) if bad else []
  if close:
    return f"config error: no such key --config.{bad[0]}; did you mean {close}?"
  return line


def parse_flags(argv: list[str]) -> list[str]:
  """absl's parser, with config errors turned into one line and exit status 2."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:  # a value of the wrong type, a missing flag, an unknown flag
    match = re.search(r"--config\.([\w.]+)=([^:\s]*)", str(e))
    if match:
      key, value = match.groups()
      try:
        default = configlib.get(_load_config(), key)
        kind = _KINDS.get(type(default).__name__, type(default).__name__)
        fix = f"config.{key} is {kind} (it is {default!r} in the config): pass {kind}"
      except (KeyError, AttributeError, TypeError):
        fix = f"pass a value of the key's type ({e})"
      print(f"config error: --config.{key}={value}: {fix}", file=sys.stderr)
    else:
      print(f"error: {'; '.join(str(e).splitlines())}; see --helpshort", file=sys.stderr)
    sys.exit(errors.EXIT_USER_ERROR)
  except (KeyError, AttributeError) as e:
    # ml_collections reports a mistyped --config.x override as one of these.
    while e.args and isinstance(e.args[0], BaseException):  # AttributeError(KeyError(msg))
      e = e.args[0]
    message = e.args[0] if e.args and isinstance(e.args[0], str) else str(e)
    print(_unknown_key("; ".join(message.splitlines())), file=sys.stderr)
    sys.exit(errors.EXIT_USER_ERROR)
  except ValueError as e:  # a config file's get_config(arg) refusing its argument
    print(f"config error: {e}", file=sys.stderr)
    sys.exit(errors.EXIT_USER_ERROR)


def run(main) -> None:
  """app.run(main) with kdjax's errors as one line and an exit status each."""

  def guarded(argv):
    try:
      main(argv)
    except errors.UserError as e:
      print(f"error: {' '.join(str(e).splitlines())}", file=sys.stderr)
      sys.exit(errors.EXIT_USER_ERROR)
    except errors.NonFiniteLoss as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(errors.EXIT_NON_FINITE)
    except errors.Preempted as e:
      print(str(e), file=sys.stderr, flush=True)
      sys.exit(errors.EXIT_PREEMPTED)

  app.run(guarded, flags_parser=parse_flags)
