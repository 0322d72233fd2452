"""Optional experiment trackers beside the CSV/JSON logs, as open_clip's ``--report-to``: ``"tensorboard"`` writes
each step's scalars (loss, margin, preference accuracy, KL, learning rate, ...) as TensorBoard events under
``<out_dir>/tensorboard``. TensorBoard is an optional dependency (``pip install tensorboard`` or
``clipwb[tensorboard]``); asking for it without it installed fails before training starts."""
from __future__ import annotations

from pathlib import Path

REPORT_TO = ("tensorboard",)


def check_report_to(report_to) -> tuple[str, ...]:
    report_to = (report_to,) if isinstance(report_to, str) else tuple(report_to or ())
    bad = [r for r in report_to if r not in REPORT_TO]
    if bad:
        raise ValueError(f"report_to {bad}: known trackers are {list(REPORT_TO)} (CSV/JSON logs are always written)")
    return report_to


def check_trackers(report_to, out_dir: str | Path | None) -> tuple[str, ...]:
    """Everything the trackers need, checked before any data are built or any step runs: known names, an out_dir,
    the tensorboard package, and a writable ``<out_dir>/tensorboard`` (TensorBoard's writer thread would otherwise
    fail later with a traceback of its own)."""
    from ..fileio import check_writable_dir

    report_to = check_report_to(report_to)
    if not report_to:
        return report_to
    if out_dir is None:
        raise ValueError(f"report_to={list(report_to)} needs out_dir: the events are written under "
                         f"<out_dir>/tensorboard")
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise ValueError("report_to='tensorboard' needs the tensorboard package: pip install tensorboard "
                         "(or pip install 'clipwb[tensorboard]'), or leave report_to empty") from None
    check_writable_dir(Path(out_dir) / "tensorboard", "TensorBoard folder")
    return report_to


class StepTrackers:
    """Scalars of every step to the trackers in ``report_to`` (none: does nothing)."""

    def __init__(self, report_to, out_dir: str | Path | None, enabled: bool = True):
        self.report_to = check_report_to(report_to)
        self.writer = None
        if not self.report_to or not enabled:
            return
        check_trackers(self.report_to, out_dir)
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(out_dir) / "tensorboard"))

    def log(self, step: int, row: dict, prefix: str = "train/") -> None:
        if self.writer is None:
            return
        for k, v in row.items():
            if k != "step" and isinstance(v, (int, float)):
                self.writer.add_scalar(prefix + k, float(v), step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
            self.writer = None
