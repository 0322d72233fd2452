"""Progress bars: ``tqdm.auto`` (a widget in JupyterLab, text in a terminal), switched off for a whole process by
``CLIPWB_NO_PROGRESS=1`` (what the command line's ``--no-progress`` sets), whatever a caller's ``disable`` says."""
from __future__ import annotations

import os

from tqdm.auto import tqdm as _tqdm


def progress_disabled() -> bool:
    return os.environ.get("CLIPWB_NO_PROGRESS", "") not in ("", "0")


def tqdm(*args, disable: bool = False, **kwargs):
    return _tqdm(*args, disable=disable or progress_disabled(), **kwargs)
