"""Shared pieces of every resource model: strict frozen models, metadata, typed leaves.

Every model is frozen and forbids unknown fields (a typo is an error, not a silently
ignored setting). Field names are snake_case in Python and read from the camelCase
keys Istio and Kubernetes write (``apiVersion``, ``subjectAltNames``...).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from meshloop.mesh.duration import Duration, positive


class Strict(BaseModel):
    """Frozen, unknown fields forbidden, camelCase keys."""

    model_config = ConfigDict(frozen=True, extra="forbid", alias_generator=to_camel)


PositiveDuration = Annotated[Duration, AfterValidator(positive)]
PortNumber = Annotated[int, Field(ge=1, le=65535)]
Percent = Annotated[float, Field(ge=0, le=100)]
NonNegative = Annotated[int, Field(ge=0)]
Labels = dict[str, str]


class ObjectMeta(Strict):
    """Kubernetes ``metadata``. Server-populated fields are accepted (``kubectl get -o yaml``) and ignored."""

    name: str = Field(min_length=1)
    namespace: str | None = None
    labels: Labels = Field(default_factory=dict)
    annotations: Labels = Field(default_factory=dict)
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: Any = None
    generate_name: str | None = None
    owner_references: Any = None
    finalizers: Any = None
    managed_fields: Any = None
    deletion_timestamp: Any = None


class Resource(Strict):
    """A top-level document: ``apiVersion``, ``kind``, ``metadata`` and (per kind) ``spec``."""

    api_version: str
    kind: str
    metadata: ObjectMeta
    status: Any = None

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        """The namespace; the loader fills ``default`` where a document names none."""
        return self.metadata.namespace or "default"

    @property
    def key(self) -> tuple[str, str, str]:
        """``(kind, namespace, name)``: unique per kind within a valid config."""
        return (self.kind, self.namespace, self.name)


class WorkloadSelector(Strict):
    match_labels: Labels = Field(default_factory=dict)


class StringMatch(Strict):
    """Istio ``StringMatch``: exactly one of ``exact``, ``prefix``, ``regex``."""

    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None

    @model_validator(mode="after")
    def _one_of(self) -> StringMatch:
        if sum(v is not None for v in (self.exact, self.prefix, self.regex)) != 1:
            raise ValueError("exactly one of exact, prefix, regex is required")
        return self


class PortSelector(Strict):
    number: PortNumber
