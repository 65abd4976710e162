"""What the annotation job shows while it runs (clips done / failed / clips per hour) and the summary table
it prints at the end."""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path

from annotate import output
from annotate.log import progress_bar


class Progress:
    """Clips done / failed / clips per hour on stderr (annotate.log's rich bar, kept after the job), or nothing."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.done, self.failed, self.t0 = total, 0, 0, time.perf_counter()
        self._stack = ExitStack()  # the bar lives from here to close(), not inside one with-block
        self.bar = self._stack.enter_context(progress_bar("annotating", total, enabled=enabled and bool(total),
                                                          transient=False))

    def rate(self) -> float:
        dt = time.perf_counter() - self.t0
        return 3600.0 * self.done / dt if dt > 0 else 0.0

    def update(self, status: str) -> None:
        self.done += 1
        self.failed += status != "ok"
        self.bar.update(completed=self.done, info=f"failed {self.failed}  {self.rate():.0f} clips/h")

    def close(self) -> None:
        self._stack.close()


def print_summary(result: dict, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    s: output.Summary = result["summary"]
    con = Console()
    t = Table(title=f"annotation of {s.total} clips", show_header=True)
    t.add_column("")
    splits = sorted(s.by_split)
    for sp in splits:
        t.add_column(sp, justify="right")
    t.add_column("all", justify="right")
    t.add_row("rows", *[str(s.by_split[sp]) for sp in splits], str(s.total))
    t.add_row("kept", *[str(s.kept_by_split.get(sp, 0)) for sp in splits], str(s.kept))
    t.add_row("ok", "", *([""] * (len(splits) - 1)), str(s.by_status["ok"]))
    t.add_row("failed", "", *([""] * (len(splits) - 1)), str(s.by_status["failed"]))
    con.print(t)
    th = s.thresholds
    if th and th.scale_max:
        con.print(f"filter q={th.quantile:g}: scale_max in [{th.scale_max[0]:.4g}, {th.scale_max[1]:.4g}], "
                  f"scale_min in [{th.scale_min[0]:.4g}, {th.scale_min[1]:.4g}]")
    if s.failure_reasons:
        con.print("top failure reasons: " + "; ".join(f"{k} ({v})" for k, v in list(s.failure_reasons.items())[:5]))
    for q in result.get("quarantined", []):
        con.print(f"damaged shard moved: {q['moved']} ({q['reason']}); its clips were processed again")
    con.print(f"this run: {result['processed']} clip(s) processed, {result['already_done']} already done, "
              f"{result['worker_crashed']} worker crash(es), {result['seconds']:.1f} s")
    con.print(f"output: {out}/clips, {out}/export, {out}/manifest.json; "
              f"report: python -m annotate report {out}")
