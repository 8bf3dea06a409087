"""The errors kdjax.main turns into one line and an exit status (no traceback).

  UserError       bad input: a config key or value, a name, a file, a workdir. The message
                  names the fix; nothing has been written over. Exit status 2.
  NonFiniteLoss   a NaN or inf loss term: the message names the step and the term; the last
                  good checkpoint is kept. Exit status 3.
  Preempted       SIGTERM (or all processes' preemption sync point): a checkpoint of the current
                  step was saved; the same command resumes. Exit status 143 (128 + SIGTERM), so a
                  scheduler that restarts failed jobs restarts it and `&&` chains stop.
"""

EXIT_USER_ERROR = 2
EXIT_NON_FINITE = 3
EXIT_PREEMPTED = 143


class UserError(ValueError):
  """Bad input; the message says what is wrong and how to fix it."""


class TeacherLoadError(UserError):
  """A pre-trained model (teacher, student or generator) could not be loaded; the message says
  how to fix it."""


class NonFiniteLoss(FloatingPointError):
  """A loss term became NaN or inf; the run stopped before checkpointing it."""


class Preempted(Exception):
  """The run was asked to stop (SIGTERM) and saved its work first; the message says where and
  that the same command resumes."""
