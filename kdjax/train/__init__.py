"""The one trainer (trainer.py) and its parts: the loop's bookkeeping (loop.py), the run
directory (workdir.py) and the cost record (accounting.py); adapt-then-distil, the command line's
entry (adapt.py)."""
