"""``report_sweep(dir)``: write ``results.csv``, ``results.md`` and the PNG plots of a sweep folder."""

from __future__ import annotations

import logging
import os
from typing import Any

from geoseg.io import atomic_write_text, ensure_writable_dir
from geoseg.output_policy import REPORT_MARK, check_folder_output, claim_output
from geoseg.report.collect import collect
from geoseg.report.plots import plot_bn_statistics, plot_miou_vs_batch, plot_throughput_memory
from geoseg.report.tables import job_rows, problems, to_csv, to_markdown

log = logging.getLogger(__name__)

PLOTS = {
    "miou_vs_batch.png": plot_miou_vs_batch,
    "throughput_memory.png": plot_throughput_memory,
    "bn_statistics.png": plot_bn_statistics,
}


def report_sweep(
    sweep_dir: str, output: str | None = None, title: str | None = None, existing: str = "overwrite"
) -> dict[str, Any]:
    """Gather the jobs under ``sweep_dir`` and write the report into ``output`` (default: the sweep folder).

    Returns the written paths, the rows and the problem lines (failed and missing jobs).
    """
    sweep = collect(sweep_dir)
    out = os.path.abspath(os.path.expanduser(output or sweep.root))
    check_folder_output(out)
    ensure_writable_dir(out, "report folder")
    written = [os.path.join(out, "results.csv"), os.path.join(out, "results.md")]
    claims = [claim_output(path, "report", existing) for path in written]
    claims += [claim_output(os.path.join(out, name), "picture", existing) for name in PLOTS]
    if not all(claims):  # existing=skip and a report is there: it is kept whole, not mixed with a new one
        log.info("a report exists in %s; kept (existing=skip)", out)
        return {"written": [], "rows": [], "problems": []}
    title = title or f"Sweep report: {os.path.basename(sweep.root.rstrip(os.sep))}"
    rows = job_rows(sweep)
    atomic_write_text(written[0], to_csv(rows), "report table")
    atomic_write_text(written[1], to_markdown(sweep, rows, title) + f"\n{REPORT_MARK}\n", "report")
    for name, plot in PLOTS.items():
        if plot(rows, os.path.join(out, name), title):
            written.append(os.path.join(out, name))
    issues = problems(sweep)
    for line in issues:
        log.warning("%s", line)
    return {"written": written, "rows": rows, "problems": issues}
