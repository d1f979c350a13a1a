"""Attention extraction and rollout vs a bare Hugging Face forward pass with attentions.

The packaged MiniLM (6 layers x 12 heads, eager attention), batch 32 texts of
128 tokens. The anchor tokenises and runs ``model(**batch, output_attentions=True)``;
``attention_maps`` does the same plus bookkeeping (tokens, masks, word ids),
and rollout multiplies the layers' head-averaged maps per text.

    python -m benchmarks.attention_speed [--quick]
"""

from __future__ import annotations

import argparse
from functools import partial

import torch

from benchmarks._common import Row, interleaved_medians, print_rows

__all__ = ["run"]

WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "saw",
    "a",
    "red",
    "ball",
    "and",
    "it",
    "rolled",
    "down",
    "the",
    "long",
    "green",
    "hill",
]


def texts_of(count: int, tokens: int) -> list[str]:
    """``count`` texts of exactly ``tokens`` tokens with [CLS] and [SEP] (one piece per word)."""
    words = (WORDS * (tokens // len(WORDS) + 1))[: tokens - 2]
    return [" ".join(words[i % 5 :] + words[: i % 5]) for i in range(count)]


def _bare(model, tokenizer, texts: list[str]) -> object:
    batch = tokenizer(texts, padding=True, truncation=True, max_length=512, return_tensors="pt")
    with torch.no_grad():
        return model(**batch, output_attentions=True).attentions


def run(*, quick: bool = False) -> list[Row]:
    from xai_checks.attention import attention_maps, text_rollout
    from xai_checks.text_models import load_text_model

    count, tokens, repeats = (4, 32, 2) if quick else (32, 128, 15)
    model, tokenizer = load_text_model()
    texts = texts_of(count, tokens)
    assert tokenizer(texts[0], return_tensors="pt")["input_ids"].shape[1] == tokens
    extract = partial(attention_maps, model, tokenizer, texts, batch_size=count, max_length=512)
    seconds = interleaved_medians(
        {
            "bare": partial(_bare, model, tokenizer, texts),
            "ours": extract,
            "rollout": lambda: text_rollout(extract()),
        },
        repeats=repeats,
    )
    bare, ours, with_rollout = seconds["bare"], seconds["ours"], seconds["rollout"]
    where = f"MiniLM, batch {count} x {tokens} tokens"
    return [
        Row("attention_speed", f"bare HF forward, output_attentions ({where})", bare, "s/batch"),
        Row("attention_speed", "attention_maps", ours, "s/batch", ours / bare, "bare",
            "<= 1.1x bare", ours / bare <= 1.1),
        Row("attention_speed", "attention_maps + text_rollout", with_rollout, "s/batch",
            with_rollout / bare, "bare", "<= 1.1x bare", with_rollout / bare <= 1.1),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    print_rows(run(quick=parser.parse_args().quick), "Attention speed")


if __name__ == "__main__":
    main()
