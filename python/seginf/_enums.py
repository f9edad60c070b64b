"""The option enums of include/seginf.h (values are part of the ABI; a test compares them with
the header).

Every function that takes one of these also accepts the member's name as a string, in any
case (``"token"``, ``"GRADIENT_NORM"``, ``"int8"``), or a plain int, which is passed to the
library unchecked (an unknown value fails there with ``SEGINF_ERR_INVALID_ARGUMENT``).
"""

from __future__ import annotations

import enum
import operator

from ._errors import Status, python_error


class TagScheme(enum.IntEnum):
    """``seginf_tag_scheme``: BIO (IOB2), IOB1, BIOES (BILOU accepted)."""

    BIO = 0
    IOB1 = 1
    BIOES = 2


class Param(enum.IntEnum):
    """``seginf_param``: parameter blocks, in the order of the dense parameter vector."""

    WEIGHT = 0
    BIAS = 1
    TRANSITIONS = 2
    START = 3
    END = 4


class Storage(enum.IntEnum):
    """``seginf_storage``: how an index stores training features."""

    F32 = 0
    F16 = 1
    INT8 = 2


class TokenStat(enum.IntEnum):
    """``seginf_token_stat``: per-token statistics kept in an index."""

    LOSS = 0
    ENTROPY = 1
    GRAD_NORM = 2


class Granularity(enum.IntEnum):
    """``seginf_granularity``: what a query scores."""

    TOKEN = 0
    INSTANCE = 1
    NEAREST_DOT = 2
    NEAREST_COSINE = 3


class Normalization(enum.IntEnum):
    """``seginf_normalization``: per-item score scaling."""

    NONE = 0
    GRADIENT_NORM = 1


class Hessian(enum.IntEnum):
    """``seginf_hessian``: Hessian approximations (all but IDENTITY via :class:`Curvature`)."""

    IDENTITY = 0
    KFAC = 1
    EKFAC = 2
    EXACT = 3


class RankMethod(enum.IntEnum):
    """``seginf_rank_method``: how :meth:`Query.rank_training` scores training items (higher =
    more likely mislabelled). The last three read the clean set."""

    TOKEN_LOSS = 0
    TOKEN_MARGINAL_LOSS = 1
    TOKEN_ENTROPY = 2
    TOKEN_GRADIENT_NORM = 3
    INSTANCE_LOSS = 4
    INSTANCE_GRADIENT_NORM = 5
    SEGMENT_INFLUENCE = 6
    SEGMENT_NEAREST = 7
    INSTANCE_INFLUENCE = 8


def enum_value(cls: type[enum.IntEnum], value) -> int:
    """The int to pass for ``value``: a member of ``cls``, its name (any case) or an int."""
    if isinstance(value, str):
        try:
            return int(cls[value.upper()])
        except KeyError:
            names = ", ".join(m.name.lower() for m in cls)
            raise python_error(
                Status.ERR_INVALID_ARGUMENT,
                f"unknown {cls.__name__} {value!r} (expected one of: {names})",
            ) from None
    try:
        if isinstance(value, bool):
            raise TypeError
        return operator.index(value)
    except TypeError:
        raise python_error(
            Status.ERR_INVALID_ARGUMENT,
            f"{cls.__name__} must be a {cls.__name__} member, its name or an int, not {type(value).__name__}",
        ) from None
