"""Claims: leases on units of work, so that of N processes exactly one does each unit, and a
unit whose process died is taken over within about a minute, on one host or across hosts.

A claim is a row of ``job_claims`` unique on (kind, key), inserted under that constraint
(the insert *is* the claim: SQLite and PostgreSQL alike let exactly one racing insert win).
It names its holder (``host``, ``pid``, a random ``token``) and carries a ``heartbeat_at``
that the holder renews while it works (:class:`bdgen.pipeline.heartbeat.Heartbeat`, every
``ttl / 4``). A claim is **dead**, and the next claimant takes it over, when

* its heartbeat is older than the lease expiry (``$BDGEN_CLAIM_TTL_S``, default 60 s), or
* its holder ran on this host and that process no longer exists (taken over at once).

A claim held by this very process is re-entrant (claiming it again succeeds). Takeover is a
compare-and-swap on the token (``UPDATE ... WHERE token = <the dead holder's>``), so two
processes that both find a claim dead cannot both take it over.

Kinds and keys (one rule, used by every caller):

==============  =========================================================================
kind            key
==============  =========================================================================
``generation``  ``<series pk>/<seed>`` (:meth:`GenerationRuns.claim_generation_run`)
``evaluation``  ``<generation run id>/<reference>/<evaluator version>[/<constraint set>]``
                (:func:`evaluation_key`)
``denoising``   ``<model id>`` (the model-level denoising evaluation, scope "")
``training``    the run directory, relative to the workspace root
==============  =========================================================================

API (all on :class:`~bdgen.store.api.Store`; results are frozen dataclasses)::

    attempt = store.try_claim("evaluation", key)   # ClaimAttempt: .won, .claim, .holder
    if attempt.won:
        store.renew_claim(attempt.claim)           # True while still ours (heartbeat)
        ...                                        # do the work, record it
        store.release_claim(attempt.claim)         # done (or failed: the row says which)
    else:
        print(attempt.holder.describe())           # "pid 123 on host h, heartbeat 4 s ago"

A run row is finished or failed, and a model's denoising metrics recorded, by the holder
of its claim only: ``finish_generation_run``, ``fail_run`` and ``record_denoising`` take
the holder's claim and drop exactly that one, by token (:func:`settle_in`); a holder whose
claim was taken over meanwhile gets :class:`ClaimLost` and records nothing. Nothing drops
a claim by (kind, key) alone.

Clocks: heartbeats are compared with the claimant's clock (UTC), so hosts sharing a store
need clocks within a few seconds of each other (NTP).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

from sqlalchemy import CursorResult, Result, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bdgen.errors import BdgenError
from bdgen.store.base import StoreBase
from bdgen.store.models import CLAIM_KINDS, JobClaim
from bdgen.util.clock import utcnow
from bdgen.util.provenance import hostname

#: Environment variable overriding the lease expiry (seconds).
ENV_CLAIM_TTL = "BDGEN_CLAIM_TTL_S"
DEFAULT_CLAIM_TTL_S = 60.0


def claim_ttl() -> timedelta:
    """The lease expiry: a claim not renewed for this long is dead."""
    raw = os.environ.get(ENV_CLAIM_TTL, "")
    try:
        ttl = float(raw) if raw else DEFAULT_CLAIM_TTL_S
    except ValueError:
        raise BdgenError(f"${ENV_CLAIM_TTL} must be a number of seconds, got {raw!r}") from None
    if not ttl > 0:
        raise BdgenError(f"${ENV_CLAIM_TTL} must be > 0, got {raw!r}")
    return timedelta(seconds=ttl)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (a zombie counts as dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child not yet reaped still answers kill(0)
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


@dataclass(frozen=True)
class Holder:
    """Who holds a claim (as last recorded)."""

    host: str
    pid: int
    heartbeat_at: datetime
    age_s: float             # seconds since the last heartbeat, by this process's clock

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host}, heartbeat {self.age_s:.0f} s ago"


@dataclass(frozen=True)
class Claim:
    """A claim this process holds."""

    kind: str
    key: str
    token: str
    host: str
    pid: int
    heartbeat_at: datetime
    took_over: Holder | None = None   # the dead holder it was taken from, if any


@dataclass(frozen=True)
class ClaimAttempt:
    """The outcome of :meth:`Claims.try_claim`: ``claim`` when won, else the live
    ``holder``."""

    claim: Claim | None
    holder: Holder | None = None

    @property
    def won(self) -> bool:
        return self.claim is not None


def _holder(row: JobClaim, now: datetime) -> Holder:
    return Holder(row.host, row.pid, row.heartbeat_at,
                  max(0.0, (now - row.heartbeat_at).total_seconds()))


def is_dead(row: JobClaim, now: datetime, ttl: timedelta) -> bool:
    """The one liveness rule (module docstring)."""
    if row.heartbeat_at < now - ttl:
        return True
    return row.host == hostname() and row.pid != os.getpid() and not pid_alive(row.pid)


def _mine(row: JobClaim) -> bool:
    return row.host == hostname() and row.pid == os.getpid()


#: How often :func:`claim_in` tries again when the claim changes hands under it (released
#: between a failed insert and the read, or released between the read and a takeover).
_CLAIM_ATTEMPTS = 5


def claim_in(s: Session, kind: str, key: str, *, ttl: timedelta | None = None) -> ClaimAttempt:
    """:meth:`Claims.try_claim` inside the caller's write transaction (so a claim and the
    run row it guards commit together).

    On PostgreSQL (READ COMMITTED) another holder's release can commit at any point of the
    caller's transaction, so a caller that read the guarded row *before* claiming must read
    it again once the claim is won: the holder may have finished the work in between (see
    :meth:`GenerationRuns._claim_generation`), and then drop the claim it just took
    (:func:`release_claim_in`)."""
    if kind not in CLAIM_KINDS:
        raise BdgenError(f"unknown claim kind {kind!r}; valid: {', '.join(CLAIM_KINDS)}")
    ttl = ttl if ttl is not None else claim_ttl()
    now = utcnow()
    token, host, pid = secrets.token_hex(16), hostname(), os.getpid()
    me: dict[str, Any] = {"token": token, "host": host, "pid": pid, "claimed_at": now,
                          "heartbeat_at": now}
    current = (select(JobClaim).filter_by(kind=kind, key=key)
               .execution_options(populate_existing=True))
    for _ in range(_CLAIM_ATTEMPTS):
        try:
            with s.begin_nested():
                s.add(JobClaim(kind=kind, key=key, **me))
            return ClaimAttempt(Claim(kind, key, token, host, pid, now))
        except IntegrityError:
            pass
        row = s.scalars(current).one_or_none()
        if row is None:  # released between our insert and our read: insert again
            continue
        if _mine(row):  # re-entrant: the same token, renewed
            row.heartbeat_at = now
            return ClaimAttempt(Claim(kind, key, row.token, row.host, row.pid, now))
        if not is_dead(row, now, ttl):
            return ClaimAttempt(None, _holder(row, now))
        previous = _holder(row, now)
        res = _rowcount(s.execute(update(JobClaim).where(JobClaim.id == row.id,
                                                         JobClaim.token == row.token)
                                  .values(**me)
                                  .execution_options(synchronize_session=False)))
        if res == 1:
            return ClaimAttempt(Claim(kind, key, token, host, pid, now, previous))
        fresh = s.scalars(current).one_or_none()
        if fresh is not None:  # another claimant took it over first
            return ClaimAttempt(None, _holder(fresh, now))
        # released meanwhile (the row failed or finished elsewhere): insert again
    raise BdgenError(f"claim {kind} {key} kept changing hands ({_CLAIM_ATTEMPTS} attempts); "
                     "try again")


def _rowcount(result: Result[Any]) -> int:
    """Rows an UPDATE/DELETE matched (its result is a CursorResult)."""
    return cast("CursorResult[Any]", result).rowcount


class ClaimLost(BdgenError):
    """The caller's claim is no longer its own: another process took it over (this one was
    frozen, or its heartbeat silent, past the lease expiry) or the work was finished or
    failed elsewhere. Whatever the caller meant to record was not recorded."""


def _lost(s: Session, kind: str, key: str, what: str) -> ClaimLost:
    """The :class:`ClaimLost` of a caller whose claim on (kind, key) is gone, saying who
    holds it now."""
    row = s.scalars(select(JobClaim).filter_by(kind=kind, key=key)
                    .execution_options(populate_existing=True)).one_or_none()
    now_held = (f"now held by {_holder(row, utcnow()).describe()}" if row is not None
                else "released meanwhile (finished or failed elsewhere)")
    return ClaimLost(f"{what}: this process's claim was lost ({now_held}), probably while "
                     "it was frozen past the lease expiry; nothing was recorded")


def settle_in(s: Session, kind: str, key: str, claim: Claim | None, what: str) -> None:
    """Drop the claim on (kind, key) inside the caller's transaction, before it records
    the guarded work as finished or failed; raise instead when the caller may not.

    * ``claim`` given (the caller holds it): only that claim is dropped, matched by its
      token; when it is gone (taken over, or released by whoever finished or failed the
      work) :class:`ClaimLost` is raised, so the caller's transaction records nothing and
      the new holder's claim and work stand.
    * ``claim`` None (a caller that holds no claim object: tests, administrative fixes,
      a sweep failing a dead worker's rows): the caller acts as a claimant would
      (:func:`claim_in`): it may when the claim is free, this process's, or dead, and a
      live holder's claim is an error naming that holder.
    """
    if claim is not None:
        if (claim.kind, claim.key) != (kind, key):
            raise BdgenError(f"claim {claim.kind} {claim.key} does not guard {what} "
                             f"({kind} {key})")
        if not release_claim_in(s, claim):
            raise _lost(s, kind, key, what)
        return
    attempt = claim_in(s, kind, key)
    if attempt.claim is None:
        assert attempt.holder is not None
        raise BdgenError(f"{what} is claimed by {attempt.holder.describe()}; only its "
                         "holder may finish or fail it")
    release_claim_in(s, attempt.claim)


def release_claim_in(s: Session, claim: Claim) -> bool:
    """Drop ``claim`` inside the caller's transaction if it is still ours; True when it
    was."""
    return _rowcount(s.execute(delete(JobClaim).where(
        JobClaim.kind == claim.kind, JobClaim.key == claim.key,
        JobClaim.token == claim.token).execution_options(synchronize_session=False))) == 1


class Claims(StoreBase):
    """Leases on units of work (module docstring)."""

    def try_claim(self, kind: str, key: str, *, ttl: timedelta | None = None) -> ClaimAttempt:
        """Claim (kind, key) for this process: won when nobody holds it, this process does,
        or its holder is dead; otherwise the live holder is returned."""
        with self.session() as s:
            return claim_in(s, kind, key, ttl=ttl)

    def renew_claim(self, claim: Claim) -> bool:
        """Renew the heartbeat; False when the claim is no longer ours (taken over)."""
        with self.session() as s:
            return _rowcount(s.execute(update(JobClaim).where(
                JobClaim.kind == claim.kind, JobClaim.key == claim.key,
                JobClaim.token == claim.token).values(heartbeat_at=utcnow()))) == 1

    def ensure_claim(self, claim: Claim, what: str) -> None:
        """Renew ``claim``; :class:`ClaimLost` when it is no longer ours. For a holder about
        to write something the new holder may have written already (a samples file): a
        check, not a guarantee (it can still be taken over right after), that narrows a
        frozen holder's window to the time of that write."""
        if not self.renew_claim(claim):
            with self.read_session() as s:
                raise _lost(s, claim.kind, claim.key, what)

    def release_claim(self, claim: Claim) -> bool:
        """Drop the claim if still ours; True when it was."""
        with self.session() as s:
            return release_claim_in(s, claim)

    def claim_holder(self, kind: str, key: str) -> Holder | None:
        """The live holder of (kind, key), or None (free, or held by a dead process)."""
        now = utcnow()
        with self.read_session() as s:
            row = s.scalars(select(JobClaim).filter_by(kind=kind, key=key)).one_or_none()
            if row is None or is_dead(row, now, claim_ttl()):
                return None
            return _holder(row, now)

    def live_claims(self, kind: str | None = None) -> list[tuple[str, str, Holder]]:
        """Every live claim as (kind, key, holder) (for status displays and tests)."""
        now, ttl = utcnow(), claim_ttl()
        with self.read_session() as s:
            q = select(JobClaim).order_by(JobClaim.id)
            if kind is not None:
                q = q.where(JobClaim.kind == kind)
            return [(r.kind, r.key, _holder(r, now)) for r in s.scalars(q)
                    if not is_dead(r, now, ttl)]


def evaluation_key(generation_run_id: int, reference: str, evaluator_version: str,
                   constraint_set: str | None = None) -> str:
    """The key of the claim on an evaluation: of the generation run that was evaluated (for
    an unguided run measured against a constraint set, the run itself, not its row in the
    set's series), and, when measured against a constraint set, that set's identity (a
    measurement against a set is an evaluation of its own). The one rule: the evaluator
    claims it (:mod:`bdgen.pipeline.tracked_evaluate`), and recording or failing the
    evaluation settles it (``record_evaluation``, ``fail_run``)."""
    key = f"{generation_run_id}/{reference}/{evaluator_version}"
    return f"{key}/{constraint_set}" if constraint_set else key


def generation_key(series_pk: int, seed: int) -> str:
    return f"{series_pk}/{seed}"
