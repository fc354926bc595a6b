"""One exception root for the project, with a few specific subclasses.

Third-party errors are wrapped at the edge (``raise StoreError(...) from e``) so that a user sees one
family of exceptions whose messages say what to fix.
"""
from __future__ import annotations


class KGRecError(Exception):
    """Root of every error kgrec raises on purpose."""


class LoadError(KGRecError, ValueError):
    """Input data could not be read. The message names the file, the line or field, and the fix."""


class SchemaError(KGRecError, ValueError):
    """Something does not fit the graph schema (unknown label, property or edge type)."""


class StoreError(KGRecError):
    """The graph store failed or refused an operation."""


class ReadOnlyQueryError(StoreError):
    """A query that would write was refused because write access was not asked for."""


class ConfigError(KGRecError, ValueError):
    """A configuration value is out of range or contradicts another one."""


class ArtifactError(KGRecError):
    """A saved engine artifact is missing, damaged or from an incompatible version."""


class UnknownIdError(KGRecError, KeyError):
    """An external id (user, item, brand, …) is not in the loaded catalog.

    Also a ``KeyError``, so ``except KeyError`` keeps working; its message is shown without the quotes
    ``KeyError`` puts around it.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()
