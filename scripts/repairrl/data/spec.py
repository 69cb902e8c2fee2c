"""A dataset's entry in the config (`datasets.<name>`), as every loader reads it, and the loaders' error.

Its own module, below the loaders: the row converters (repairrl.data.gitbug_java, ...) that the loaders import
take a spec too.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class DatasetError(ValueError):
    """A dataset cannot be loaded, or a row is malformed; the message names the dataset, row and field."""


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset entry of the config (`datasets.<name>`), see workflow/schemas/config.schema.yaml."""

    name: str
    format: str  # swe-bench | swe-gym | gitbug-java | mini
    hub: str | None = None
    path: str | None = None
    hub_split: str = "test"
    hub_config: str | None = None  # the hub dataset's configuration (e.g. PrimeVul's "paired")
    revision: str | None = None
    split: str = "test"  # our split label (train | eval ...)
    repo_url_template: str = "https://github.com/{repo}.git"
    repos: list[str] = field(default_factory=list)
    instance_ids: list[str] = field(default_factory=list)
    split_filter: str | None = None  # keep only rows whose own `split` column has this value (mini benchmark)
    language_filter: str | None = None
    limit: int | None = None
    # Keep only tasks whose gold patch changes one file (the file-level repair task's training data).
    single_file_patch: bool = False
    on_bad_row: str = "error"  # error | skip

    @classmethod
    def from_config(cls, name: str, entry: dict) -> DatasetSpec:
        source = entry.get("source", {})
        filters = entry.get("filters", {})
        return cls(
            name=name,
            format=entry["format"],
            hub=source.get("hub"),
            path=source.get("path"),
            hub_split=source.get("split", "test"),
            hub_config=source.get("config"),
            revision=source.get("revision"),
            split=entry.get("split", "test"),
            repo_url_template=entry.get("repo_url_template", cls.repo_url_template),
            repos=list(filters.get("repos", [])),
            instance_ids=list(filters.get("instance_ids", [])),
            split_filter=filters.get("split"),
            language_filter=filters.get("language"),
            limit=filters.get("limit"),
            single_file_patch=bool(filters.get("single_file_patch", False)),
            on_bad_row=entry.get("on_bad_row", "error"),
        )
