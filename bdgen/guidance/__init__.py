"""Constraint guidance (science layer): constraint language, violations, reward, calibration,
and the guided part of method names.

Modules: :mod:`~bdgen.guidance.names` (guided settings and their name grammar, canonical
numbers), :mod:`~bdgen.guidance.schema` (constraint files, validated with pydantic),
:mod:`~bdgen.guidance.constraints` (the compiled constraint set and its identity),
:mod:`~bdgen.guidance.violations` (hard and soft violations, effective probabilities, hard
decode), :mod:`~bdgen.guidance.reward` (energy, reward, candidate weights) and
:mod:`~bdgen.guidance.calibration` (P90 normalisers). Nothing here imports the store, MLflow,
DVC or the pipeline, and importing the package itself imports nothing (method names need
neither torch nor pydantic).
"""
