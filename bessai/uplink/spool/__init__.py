"""The durable outbox: every reading and event is on disk before it counts as accepted.

One SQLite file (WAL, ``synchronous=FULL``) per gateway. The package splits the jobs:

| module | job |
|---|---|
| `outbox` | `Spool`, the Trio-facing side: appends, group commit, leases, disk-fault states |
| `worker` | the store's thread, the one owner of the file's connection |
| `store` | what that thread does to the file: write a group, read a lease, salvage |
| `recovery` | opening: integrity check, corrupt file moved aside, seqs that never go back |
| `drops` | the budget and max-age drops, and the gap rows that name them |
| `group` | stamping a group's rows (seq, msg_id) on the hot path |
| `budget` | the ``SPOOL_BUDGET_*`` alarm |
| `disk` | what is wrong with the disk (``SPOOL_DISK_FAULT condition=``) |
| `schema` | the on-disk format |
| `offline` | the CLI's tools: stats, export, backup, import |

The names below are the package's front door; the modules are implementation details.
"""

from bessai.uplink.spool.budget import WARN_FRACTION
from bessai.uplink.spool.errors import SpoolError, SpoolWriteError
from bessai.uplink.spool.ids import new_msg_ids
from bessai.uplink.spool.offline import (
    IMPORT_CHUNK_ROWS,
    ImportResult,
    backup_spool,
    export_rows,
    import_rows,
    iter_rows,
    read_stats,
)
from bessai.uplink.spool.outbox import Spool
from bessai.uplink.spool.schema import ROW_OVERHEAD_BYTES, SCHEMA_VERSION
from bessai.uplink.spool.store import DROP_TO_FRACTION
from bessai.uplink.spool.values import Accepted, SpoolStats

__all__ = [
    "DROP_TO_FRACTION",
    "IMPORT_CHUNK_ROWS",
    "ROW_OVERHEAD_BYTES",
    "SCHEMA_VERSION",
    "WARN_FRACTION",
    "Accepted",
    "ImportResult",
    "Spool",
    "SpoolError",
    "SpoolStats",
    "SpoolWriteError",
    "backup_spool",
    "export_rows",
    "import_rows",
    "iter_rows",
    "new_msg_ids",
    "read_stats",
]
