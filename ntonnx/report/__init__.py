"""The human-readable side of a ``tune`` report: the fields it needs, figures, and one HTML page.

:func:`report_fields` builds the report's extra JSON fields from arrays (pure NumPy);
:func:`render_html`/:func:`write_html` and :func:`main_figure` draw from the JSON dict alone and
need the ``[report]`` extra (matplotlib), imported only when a figure is drawn.
"""

from ntonnx.report.fields import report_fields
from ntonnx.report.figures import main_figure, save_figure
from ntonnx.report.html import read_report, render_html, write_html

__all__ = ["main_figure", "read_report", "render_html", "report_fields", "save_figure", "write_html"]
