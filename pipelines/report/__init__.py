"""What a reviewer sees: figures, attention views and the self-contained HTML report.

Figures are drawn headless, into files and MLflow artifacts, never onto a
screen: the backend is chosen here, once, before any submodule imports pyplot.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
