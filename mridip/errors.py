"""The one exception family of mridip.

Every error that a user can cause with bad input derives from :class:`MridipError`; the
command line turns it into one line on stderr and exit code 2.
"""

from __future__ import annotations


class MridipError(Exception):
    """Base class of every error mridip raises on bad input or bad configuration."""


class RawDataError(MridipError):
    """A raw data file cannot be read or does not hold what a reconstruction needs."""


class KSpaceError(MridipError):
    """A :class:`~mridip.kspace.DynamicKSpace` violates its invariants."""


class ConfigError(MridipError):
    """An option or combination of options is not valid."""


class ResultError(MridipError):
    """A result or reference file cannot be read or does not match."""
