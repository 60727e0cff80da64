"""Whether a process still runs: how a lock or a staging folder left by a killed run is told
from one in use."""

import os


def is_running(pid: int) -> bool:
    """True when a process ``pid`` exists on this machine (whoever owns it)."""
    try:
        os.kill(pid, 0)  # signal 0: existence check only
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
