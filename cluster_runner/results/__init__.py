"""Results: the records a run writes, the environment they describe, and their storage.

- :mod:`.records`: the typed run record, its one JSON form, and the history of that format;
- :mod:`.stages`: the parts of a record that describe one stage (value, placement, usage,
  timeline);
- :mod:`.store`: the JSON Lines files, written as each run ends and read back;
- :mod:`.environment`: the driver's machine and packages, written into every record.
"""

from __future__ import annotations

from cluster_runner.results.environment import (
    BlasLibrary,
    Environment,
    cpu_model,
    driver_environment,
)
from cluster_runner.results.records import (
    RECORD_FORMAT,
    SCHEMA_VERSION,
    BackendRecord,
    JobRecord,
    JobStage,
    RunRecord,
    Source,
    SweepLabels,
)
from cluster_runner.results.stages import (
    Placement,
    StageRecord,
    StageResult,
    Timeline,
    Transfer,
    Usage,
)
from cluster_runner.results.store import (
    ResultsWriter,
    new_id,
    now,
    read_records,
    results_files,
    results_path,
)

__all__ = [
    "RECORD_FORMAT",
    "SCHEMA_VERSION",
    "BackendRecord",
    "BlasLibrary",
    "Environment",
    "JobRecord",
    "JobStage",
    "Placement",
    "ResultsWriter",
    "RunRecord",
    "Source",
    "StageRecord",
    "StageResult",
    "SweepLabels",
    "Timeline",
    "Transfer",
    "Usage",
    "cpu_model",
    "driver_environment",
    "new_id",
    "now",
    "read_records",
    "results_files",
    "results_path",
]
