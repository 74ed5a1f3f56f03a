"""Domain errors of the coordinator; the servicer maps each to one gRPC status code."""

from __future__ import annotations


class CoordinatorError(Exception):
    """Base class of the coordinator's domain errors."""


class InvalidArgument(CoordinatorError, ValueError):
    """A request field is invalid. `field` names it (dotted path, e.g. `spec.lori.rank`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class NotFound(CoordinatorError, KeyError):
    """An id (job, adapter, dataset, schedule) is unknown."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "not found"


class AlreadyExists(CoordinatorError):
    """A named resource exists already (a schedule name, a dataset with other content)."""


class FailedPrecondition(CoordinatorError):
    """The request is valid but the system is not in a state to perform it."""


class Unavailable(CoordinatorError):
    """A backend (object store, Ray) cannot be reached."""
