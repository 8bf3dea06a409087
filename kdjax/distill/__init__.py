"""The distillation side of the trainer: the objective and its terms (objective.py), each
teacher's input view (teacher_views.py), loading teacher.models with provenance (teachers.py),
the cached teacher outputs (teacher_cache.py) and what a run reports of its teachers
(reports.py)."""
