"""Constraint sets of an evaluation: the one a samples file carries (guided runs) or the one
given with ``--constraints`` (unguided baselines), read from files with their calibration."""

from __future__ import annotations

from pathlib import Path

from bdgen.data.samples_file import SamplesFile
from bdgen.diffusion.method import GUIDED_MARK
from bdgen.errors import BdgenError
from bdgen.guidance.constraints import ConstraintSet


def constraints_for(sf: SamplesFile, given: ConstraintSet | None,
                    where: str) -> ConstraintSet | None:
    """The set a samples file's constraint metrics are measured against: its own (guided
    runs; the copy must match its recorded identity), else ``given``. A guided file given
    another set is refused: its satisfaction must be that of the set it was sampled with."""
    own = None
    if sf.constraints is not None:
        data = dict(sf.constraints)
        recorded = data.pop("identity", None)
        own = ConstraintSet.from_dict(data, f"{where}: constraint set")
        if recorded is not None and recorded != own.identity:
            raise BdgenError(f"{where}: its constraint set hashes to {own.short_id}, not the "
                             f"recorded identity {str(recorded)[:12]} (file altered?)")
    if own is None and GUIDED_MARK in sf.method:
        raise BdgenError(f"{where}: guided samples ({sf.method}) carry no constraint set; "
                         "their satisfaction can only be measured against the set they were "
                         "sampled with")
    if own is not None and given is not None and given.identity != own.identity:
        raise BdgenError(f"{where}: guided samples were drawn with constraint set "
                         f"{own.short_id}; --constraints gives {given.short_id} (leave it out "
                         f"to use the file's own set)")
    return own if own is not None else given


def load_constraints(path: str | Path,
                     calibration: str | Path | None = None) -> ConstraintSet:
    """The compiled set of a constraint file, calibrated by ``calibration`` or the file's
    own ``calibration_file`` (as ``bdgen constraints check`` shows it)."""
    from bdgen.guidance.calibration import load_calibration
    from bdgen.guidance.schema import calibration_path, load_constraint_file

    cf = load_constraint_file(path)
    cs = cf.compile()
    calib = calibration or calibration_path(cf, path)
    return cs if calib is None else load_calibration(calib, cs)
