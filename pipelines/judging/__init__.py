"""Judging apart from signing: the model runs in a worker process that holds no key.

Loading a model runs its code (a pickle runs whatever it holds; a transformers
model or a custom module runs its forward pass). The gate's own process holds
``XAI_GATE_SECRET`` and the registry's credentials, so it never loads a model:
:mod:`pipelines.judging.sandbox` forks :mod:`pipelines.judging.worker` from a
zygote whose environment never held a credential, the worker drops every
capability before the model loads, writes plain files (JSON,
CSV, PNG, HTML) and :mod:`pipelines.judging.contract` reads them back, checking
types, ranges, paths and the digests of what was judged. Nothing the worker
writes is unpickled. Commands that run a model in their own process
(``xai-gate discover``, the MLflow evaluator) refuse to while a secret is set
(:func:`pipelines.judging.sandbox.refuse_beside_secrets`).
"""
