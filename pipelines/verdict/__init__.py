"""The verdict and the registry: deciding, signing, recording, and the guarded registry store.

A verdict is written to the model version as tags, signed when
``XAI_GATE_SECRET`` is set, and the protected alias moves only on ``passed``.
"""

from __future__ import annotations

from xai_checks.compat import lazy_exports

_EXPORTS = {
    **dict.fromkeys(
        ("DEFAULT_ALIAS", "GateDecision", "Verdict", "decide", "prior_verdict", "record_verdict"),
        "pipelines.verdict.decision",
    ),
    "GuardedRegistryStore": "pipelines.verdict.guard",
    "sign_verdict": "pipelines.verdict.signing",
    "verify_signature": "pipelines.verdict.signing",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
