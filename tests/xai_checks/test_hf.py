"""Pickled Hugging Face models (MLflow's pickle format) still give their attentions."""

from __future__ import annotations

import subprocess
import sys

import torch

from xai_checks.examples.toy_text_models import tiny_bert_classifier

_LOAD = """
import sys, torch
model = torch.load(sys.argv[1], weights_only=False)
ids = torch.tensor([[101, 7, 8, 9, 102]])
plain = model(input_ids=ids, output_attentions=True).attentions
from xai_checks._hf import restore_output_capture
restore_output_capture(model)
fixed = model(input_ids=ids, output_attentions=True).attentions
print(plain is None or len(plain) == 0, len(fixed), tuple(fixed[0].shape))
"""


def test_a_model_unpickled_in_a_fresh_process_gets_its_attentions_back(tmp_path):
    path = tmp_path / "model.pt"
    model = tiny_bert_classifier(vocab_size=200)
    model(input_ids=torch.tensor([[1, 2, 3]]))  # used once, as after training
    torch.save(model, path)
    run = subprocess.run(
        [sys.executable, "-c", _LOAD, str(path)], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    # Without the fix transformers returns nothing; with it, 2 layers of (1, 4 heads, 5, 5).
    assert run.stdout.split("\n")[-2] == "True 2 (1, 4, 5, 5)"
