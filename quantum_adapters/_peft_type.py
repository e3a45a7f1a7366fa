"""Adds ``QTHA`` to PEFT's ``PeftType`` enum.

PEFT's ``register_peft_method`` only accepts names already in its ``PeftType`` enum, and an enum cannot
be extended through a public API. ``PeftType`` is a ``str`` enum, so a member built the way ``enum``
builds its own behaves exactly like the built-in ones (JSON, equality with "QTHA", lookups by value).
This is the only place the project touches PEFT's internals.
"""

from __future__ import annotations

from peft.utils.peft_types import PeftType

__all__ = ["QTHA_PEFT_TYPE"]


def _add_member(name: str) -> PeftType:
    if name in PeftType.__members__:
        return PeftType[name]
    member = str.__new__(PeftType, name)
    member._name_ = name
    member._value_ = name
    member.__objclass__ = PeftType
    member.__init__(name)
    type.__setattr__(PeftType, name, member)
    PeftType._member_map_[name] = member
    PeftType._value2member_map_[name] = member
    PeftType._member_names_.append(name)
    return member


QTHA_PEFT_TYPE: PeftType = _add_member("QTHA")
