"""``batch-platform-dbt``: dbt, as a child that dies with its parent.

dagster-dbt runs dbt in a subprocess. If the step's process is killed (SIGKILL, OOM killer), a plain child keeps
running on its own: it keeps the warehouse file open and goes on writing a feature generation nobody will
publish, while the next command already starts another build. This wrapper asks the kernel to kill it with its
parent, then becomes dbt (same arguments, same process)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from batch_platform.lib.processes import die_with_parent


def real_dbt() -> str:
    beside = Path(sys.executable).parent / "dbt"
    return str(beside) if beside.exists() else "dbt"


def main() -> None:
    parent = os.getppid()
    die_with_parent()
    if os.getppid() != parent:  # the parent died before the request took effect
        sys.exit(137)
    dbt = real_dbt()
    os.execvp(dbt, [dbt, *sys.argv[1:]])


if __name__ == "__main__":
    main()
