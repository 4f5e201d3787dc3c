"""Typed errors. The CLI and the dashboard turn each into one clear line."""


class SchemewatchError(Exception):
    """Base class for every error an auditor or operator may see."""


class DatabaseError(SchemewatchError):
    """The database is missing, locked, or not a Schemewatch database."""


class DatabaseBusy(DatabaseError):
    """Another connection kept the write lock beyond the busy timeout; nothing was written, and
    the same write may simply be tried again."""


class SchemaVersionError(DatabaseError):
    """The database was written by a newer Schemewatch than this one."""


class ImportRejected(SchemewatchError):
    """A CSV extract failed validation; nothing was written."""

    def __init__(self, problems: list, total_rows: int):
        self.problems = problems
        self.total_rows = total_rows
        first = problems[0]
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        super().__init__(f"{first}{more}; nothing was imported")


class OutputError(SchemewatchError):
    """An export or rejects file could not be written; nothing was left behind."""


class GenerationError(SchemewatchError):
    """The generator was asked for something it cannot build."""


class FeedExhausted(SchemewatchError):
    """Every enrolled beneficiary has been paid for the current periods."""


class ModelError(SchemewatchError):
    """A model is missing, damaged, or does not match this code's features."""


class CaseConflict(SchemewatchError):
    """Someone else changed an alert's case since it was loaded; reload before saving."""


class IntegrityError(SchemewatchError):
    """The audit trail or a transaction batch no longer matches its hashes."""
