"""MLflow: where runs go, loading a model version, logging the evidence, orphaned runs,
and the ``xai`` evaluator for ``mlflow.models.evaluate``.

MLflow is imported inside the functions that need it, so importing this
package stays cheap.
"""

from __future__ import annotations

from xai_checks.compat import lazy_exports_of

MODULES = (
    "pipelines.tracking.config",
    "pipelines.tracking.orphans",
    "pipelines.tracking.evidence_runs",
    "pipelines.tracking.models",
)
"""Every public name of these (cheapest first) is a name of the package, as it was of the one
module ``pipelines.tracking`` of release 0.1."""

__getattr__, __dir__ = lazy_exports_of(__name__, MODULES)
