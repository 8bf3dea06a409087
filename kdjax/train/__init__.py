"""The one trainer (trainer.py) and its parts: the loop's bookkeeping (loop.py), the run
directory (workdir.py) and the cost record (accounting.py)."""
