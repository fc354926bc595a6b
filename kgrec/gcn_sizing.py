"""What GCN training's ``"auto"`` options resolve to for a catalog size (:func:`resolve`), without torch, so
that :mod:`kgrec.gcn_train` and the build cost model (:mod:`kgrec.buildcost`, ``kgrec build --dry-run``)
agree on them.

Up to :data:`FULL_SOFTMAX_MAX_ITEMS` warm items and :data:`MAX_STEPS_PER_EPOCH` × :data:`BATCH` training
pairs everything resolves to the fixed settings the GCN was tuned with on Amazon Scientific (full softmax,
batches of 2,048, every pair once per epoch, every validation user), so such catalogs train exactly as
before these options existed. Beyond, the work of a step and of an epoch stays bounded:

- ``neg``: a sampled softmax with :data:`SAMPLED_NEG` uniform negatives shared by the batch (logits
  ``batch × (1 + neg)``) instead of a full softmax over every warm item;
- ``batch_size`` grows so an epoch is at most :data:`MAX_STEPS_PER_EPOCH` steps (each step propagates over
  the whole graph once), up to :data:`MAX_BATCH`; past that an epoch is a random
  ``MAX_STEPS_PER_EPOCH × MAX_BATCH`` share of the pairs (a new one each epoch). ``steps_per_epoch``
  (``"auto"``) bounds an epoch only when the batch size is ``"auto"`` too;
- ``valid_users``: at most :data:`VALID_SCORES` / items validation users are ranked each epoch (at least
  :data:`VALID_USERS_MIN`), a seeded sample of the held-out ones.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

FULL_SOFTMAX_MAX_ITEMS = 20_000  # warm items up to which the softmax is over all of them
SAMPLED_NEG = 1024  # shared uniform negatives of the sampled softmax beyond that
BATCH = 2048  # training pairs per step on small catalogs
MAX_STEPS_PER_EPOCH = 64  # full-graph propagations per epoch, at most (batch_size="auto")
MAX_BATCH = 32_768  # the batch stops growing here (logits and their gradient: batch × (1 + neg))
VALID_SCORES = 5e8  # validation users × items scored per epoch, at most (valid_users="auto")
VALID_USERS_MIN = 2_000  # … but at least this many validation users (when there are)
SCORE_BLOCK_BYTES = 256 * 2**20  # one block of validation scores (float32 queries × items)


@dataclass(frozen=True)
class GCNSizing:
    """Resolved sizes: ``neg`` (None: full softmax / one BPR negative), ``batch_size``, ``steps_per_epoch``
    and ``valid_users`` (None: every validation user)."""

    neg: int | None
    batch_size: int
    steps_per_epoch: int
    valid_users: int | None

    def to_dict(self) -> dict:
        return {"neg": self.neg, "batch_size": self.batch_size, "steps_per_epoch": self.steps_per_epoch,
                "valid_users": self.valid_users}


def resolve(n_pairs: int, n_warm: int, n_items: int, *, loss: str = "softmax", neg="auto", batch_size="auto",
            steps_per_epoch="auto", valid_users="auto") -> GCNSizing:
    """The sizes for ``n_pairs`` distinct training pairs, ``n_warm`` items with training interactions and
    ``n_items`` items ranked at validation; options given as ints (or ``None``) are kept as they are."""
    n_pairs = max(int(n_pairs), 1)
    if neg == "auto":
        neg = SAMPLED_NEG if loss == "softmax" and n_warm > FULL_SOFTMAX_MAX_ITEMS else None
    auto_batch = batch_size == "auto"
    if auto_batch:
        batch_size = min(max(BATCH, math.ceil(n_pairs / MAX_STEPS_PER_EPOCH)), MAX_BATCH)
    batch_size = int(batch_size)
    steps = math.ceil(n_pairs / batch_size)
    if steps_per_epoch == "auto":  # a given batch size keeps an epoch = every pair once
        steps_per_epoch = min(steps, MAX_STEPS_PER_EPOCH) if auto_batch else steps
    elif steps_per_epoch is None:
        steps_per_epoch = steps
    steps_per_epoch = min(int(steps_per_epoch), steps)
    if valid_users == "auto":
        valid_users = max(VALID_USERS_MIN, int(VALID_SCORES // max(n_items, 1)))
    return GCNSizing(None if neg is None else int(neg), batch_size, steps_per_epoch,
                     None if valid_users is None else int(valid_users))


def score_chunk(n_items: int, cap: int = 2048) -> int:
    """Query rows per block of validation scores so a block (float32, rows × ``n_items``) stays within
    :data:`SCORE_BLOCK_BYTES`; ``cap`` rows at most."""
    return max(1, min(cap, SCORE_BLOCK_BYTES // (4 * max(n_items, 1))))


__all__ = ["GCNSizing", "resolve", "score_chunk", "FULL_SOFTMAX_MAX_ITEMS", "SAMPLED_NEG", "MAX_STEPS_PER_EPOCH",
           "MAX_BATCH", "VALID_SCORES"]
