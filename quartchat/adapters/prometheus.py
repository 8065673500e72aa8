"""prometheus_client's private names (prometheus-client 0.26.0, pinned in requirements.txt).

The library chooses how every metric keeps its values once, when `prometheus_client.values` is
imported: in files (multiprocess mode) if `PROMETHEUS_MULTIPROC_DIR` is set then, else in memory.
`python -m quartchat` creates that directory only when it starts several workers, long after
the import, so the choice is made again here:
- `prometheus_client.values.ValueClass`, the class each metric's constructor reads through that
  module (`values.ValueClass(...)`) for every value it makes; replaced by
  `values.MultiProcessValue()`'s class, which writes to `PROMETHEUS_MULTIPROC_DIR` (read from the
  environment each time a file is opened: it is set here too).
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import values

ENVIRONMENT = "PROMETHEUS_MULTIPROC_DIR"


def use_multiprocess_values(directory: Path) -> None:
    """Make the metrics this process creates from now on keep their values in `directory`, one
    file per process and kind, for a `MultiProcessCollector` over it to add up. Once per process:
    a second class would open the same files again."""
    os.environ[ENVIRONMENT] = str(directory)
    if values.ValueClass is values.MutexValue:
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
