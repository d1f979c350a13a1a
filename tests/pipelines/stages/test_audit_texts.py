"""Text audit sets (GX-validated CSVs) and the text shortcut audit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from pipelines.audit_sets.images import AuditSetError
from pipelines.audit_sets.texts import is_text_manifest, load_text_audit_set, write_text_audit_set
from pipelines.evidence.columns import TEXT_SCORE_COLUMNS
from pipelines.stages.text import audit_texts
from xai_checks.errors import NonFiniteError, XAICheckError
from xai_checks.examples.synthetic_text import REVIEW_CLASSES, make_reviews


def _csv(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "texts.csv"
    path.write_text(body)
    return path


def test_round_trip_and_detection(tmp_path):
    batch = make_reviews(6, signature="always", seed=2)
    path = write_text_audit_set(
        tmp_path / "a" / "audit.csv", batch.texts, batch.labels, batch.spurious, REVIEW_CLASSES
    )
    loaded = load_text_audit_set(path, class_names=REVIEW_CLASSES)
    assert loaded.texts == batch.texts
    assert loaded.labels.tolist() == batch.labels.tolist()
    assert loaded.spurious == batch.spurious
    assert loaded.text_ids[0] == "review-00000" and len(loaded) == 6
    assert is_text_manifest(path)
    assert not is_text_manifest(_csv(tmp_path, "image,label,spurious_mask\n"))


def test_ids_default_to_the_csv_line_and_several_words_split_on_bars(tmp_path):
    path = _csv(
        tmp_path,
        'text,label,spurious_tokens\n"great lamp, reviewed by sam",positive,reviewed by sam|sam\n',
    )
    loaded = load_text_audit_set(path, class_names=REVIEW_CLASSES)
    assert loaded.text_ids == ["text-2"]
    assert loaded.spurious == [("reviewed by sam", "sam")]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("text,label\nhi,positive\n", "required column 'spurious_tokens' is missing"),
        (
            "text,label,spurious_tokens\ngood lamp cheers,great,cheers\n",
            r"texts.csv:2 'great' \(known: negative, positive\)",
        ),
        (
            "text,label,spurious_tokens\ngood lamp,positive,cheers\n",
            r"texts.csv:2 column 'spurious_tokens': spurious word\(s\) \['cheers'\] do not occur",
        ),
        (
            'text,label,spurious_tokens\n" ",positive,cheers\n',
            "texts.csv:2 column 'text': empty text",
        ),
        (
            "text,label,spurious_tokens\ngood lamp cheers,positive,\n",
            "texts.csv:2 column 'spurious_tokens': no spurious words given",
        ),
        (
            "id,text,label,spurious_tokens\n"
            "a,x cheers,positive,cheers\na,y cheers,negative,cheers\n",
            "column 'id' repeats an id: texts.csv:2 'a', texts.csv:3 'a'",
        ),
    ],
)
def test_bad_text_audit_sets_name_file_line_and_column(tmp_path, body, message):
    with pytest.raises(AuditSetError, match=message):
        load_text_audit_set(_csv(tmp_path, body), class_names=REVIEW_CLASSES)


@pytest.mark.slow
def test_text_audit_separates_the_shortcut_model_from_the_clean_one(trained_text_pair):
    audit = make_reviews(32, signature="always", seed=100)
    args = (trained_text_pair.tokenizer, audit.texts, audit.labels, audit.spurious)
    shortcut = audit_texts(trained_text_pair.shortcut, *args, class_names=REVIEW_CLASSES)
    clean = audit_texts(trained_text_pair.clean, *args, class_names=REVIEW_CLASSES)
    assert list(shortcut.scores.columns) == list(TEXT_SCORE_COLUMNS)
    s, c = shortcut.metrics(), clean.metrics()
    # Observed: saliency 0.83 vs 0.03, attention 0.82 vs 0.04, precision@k 1.0 vs 0.0.
    assert s["saliency.spurious_mass"] > 0.5 > 0.1 > c["saliency.spurious_mass"]
    assert s["saliency.precision_at_k"] > 0.87 > c["saliency.precision_at_k"]
    assert s["attention.cls_mass"] > c["attention.cls_mass"] + 0.3
    assert s["attention.rollout_mass"] > c["attention.rollout_mass"] + 0.3
    assert s["saliency.spurious_mass_ci_low"] > c["saliency.spurious_mass_ci_high"]
    # Chance: one spurious word among the review's words.
    assert 0.1 < s["saliency.chance_mass"] < 0.2
    assert shortcut.worst and shortcut.worst[0].attention.shape[:2] == (2, 4)
    spurious_tokens = [
        t
        for t, f in zip(shortcut.worst[0].tokens, shortcut.worst[0].spurious_tokens, strict=True)
        if f
    ]
    assert spurious_tokens == ["cheers"]


@pytest.mark.slow
def test_masses_follow_the_definition_on_one_text(trained_text_pair):
    from xai_checks.attention import attention_maps
    from xai_checks.saliency import token_saliency

    text, model, tok = (
        "the lamp was plain . cheers",
        trained_text_pair.shortcut,
        trained_text_pair.tokenizer,
    )
    row = audit_texts(model, tok, [text], [1], [("cheers",)]).scores.iloc[0]
    saliency = token_saliency(model, tok, [text]).scores[0]
    words = saliency[1:-1]  # drop [CLS] and [SEP]; every word is one token here
    assert row["spurious_mass"] == pytest.approx(float(words[-1] / words.sum()), rel=1e-5)
    cls_row = attention_maps(model, tok, [text]).weights[0, -1].mean(dim=0)[0, 1:-1]
    assert row["attention_mass"] == pytest.approx(float(cls_row[-1] / cls_row.sum()), rel=1e-5)
    assert row["precision_at_k"] == float(torch.argmax(words) == len(words) - 1)


@pytest.fixture(scope="module")
def tiny_text_model() -> tuple[Any, torch.nn.Module]:
    """The packaged MiniLM tokenizer and an untrained tiny BERT with 64 positions.

    Untrained is enough: truncation and the errors about it do not depend on
    the weights, and building it takes well under a second.
    """
    from transformers import AutoTokenizer

    from xai_checks.examples.toy_text_models import tiny_bert_classifier
    from xai_checks.text_models import default_text_model_path

    tokenizer = AutoTokenizer.from_pretrained(str(default_text_model_path()))
    return tokenizer, tiny_bert_classifier(tokenizer.vocab_size)


# Far more than 64 tokens: each repeat is five word tokens.
FILLER = "the lamp was fine . " * 20


def test_spurious_words_cut_off_by_truncation_are_an_error_naming_the_text(tiny_text_model):
    tokenizer, model = tiny_text_model
    long_text = FILLER + "cheers"
    with pytest.raises(
        XAICheckError,
        match=r"text 'long' column 'spurious_tokens': spurious word\(s\) \['cheers'\] lie "
        r"beyond the model's token limit \(64 tokens kept\)",
    ):
        audit_texts(model, tokenizer, [long_text], [1], [("cheers",)], text_ids=["long"])


def test_one_spurious_word_cut_off_is_an_error_even_when_another_fits(tmp_path, tiny_text_model):
    """Scoring only the surviving word would understate the reliance on the pair."""
    tokenizer, model = tiny_text_model
    path = _csv(
        tmp_path,
        "text,label,spurious_tokens\n"
        "a fine lamp cheers,positive,cheers\n"
        f"cheers . {FILLER}reviewed by sam,positive,cheers|reviewed by sam\n",
    )
    data = load_text_audit_set(path, class_names=REVIEW_CLASSES)
    with pytest.raises(XAICheckError) as caught:
        audit_texts(
            model,
            tokenizer,
            data.texts,
            data.labels,
            data.spurious,
            text_ids=data.text_ids,
            class_names=REVIEW_CLASSES,
            manifest=data.manifest,
        )
    message = str(caught.value)
    assert message.startswith(
        "texts.csv:3 text 'text-3' column 'spurious_tokens': spurious word(s) "
        "['reviewed by sam'] lie beyond the model's token limit (64 tokens kept)"
    ), message
    assert "'cheers'" not in message  # the word that fits is not blamed


def test_a_spurious_phrase_cut_in_half_by_truncation_is_an_error(tiny_text_model):
    """Its first words survive and would be scored as if the whole phrase had been."""
    tokenizer, model = tiny_text_model
    ids = tokenizer(FILLER, add_special_tokens=False)["input_ids"]
    head = tokenizer.decode(ids[:61])  # 61 words + [CLS] + 'reviewed' + [SEP] = 64 tokens
    text = f"{head} reviewed by sam"
    with pytest.raises(XAICheckError, match=r"\['reviewed by sam'\] lie beyond"):
        audit_texts(model, tokenizer, [text], [1], [("reviewed by sam",)])


def test_a_long_text_whose_spurious_words_all_fit_is_truncated_and_scored(tiny_text_model):
    tokenizer, model = tiny_text_model
    text = "reviewed by sam , cheers . " + FILLER
    assert len(tokenizer(text)["input_ids"]) > 64  # it really is truncated
    result = audit_texts(model, tokenizer, [text], [1], [("reviewed by sam", "cheers")])
    row = result.scores.iloc[0]
    example = result.worst[0]
    assert len(example.tokens) == 64 and example.tokens[-1] == "[SEP]"
    spurious = [t for t, f in zip(example.tokens, example.spurious_tokens, strict=True) if f]
    assert spurious == ["reviewed", "by", "sam", "cheers"]
    assert 0.0 < row["spurious_mass"] < 1.0 and 0.0 < row["attention_mass"] < 1.0
    # k = 4 spurious words, so precision@k is a multiple of 1/4.
    assert row["precision_at_k"] in {0.0, 0.25, 0.5, 0.75, 1.0}


def test_a_text_csv_that_is_not_utf8_is_a_clear_error_naming_the_file(tmp_path):
    path = tmp_path / "texts.csv"
    path.write_bytes(b"text,label,spurious_tokens\ncaf\xe9 cheers,positive,cheers\n")
    with pytest.raises(AuditSetError, match=r"cannot read manifest .*texts\.csv: 'utf-8' codec"):
        load_text_audit_set(path, class_names=REVIEW_CLASSES)


def test_nan_logits_are_an_error_even_when_the_saliency_is_finite(tmp_path, tiny_text_model):
    """A NaN bias leaves every gradient finite, so only the logits themselves show it."""
    from xai_checks.examples.toy_text_models import tiny_bert_classifier

    tokenizer, _ = tiny_text_model
    model = tiny_bert_classifier(tokenizer.vocab_size)
    with torch.no_grad():
        model.classifier.bias.fill_(float("nan"))
    path = _csv(
        tmp_path,
        "text,label,spurious_tokens\na fine lamp cheers,positive,cheers\n",
    )
    data = load_text_audit_set(path, class_names=REVIEW_CLASSES)
    with pytest.raises(
        NonFiniteError,
        match=r"^texts\.csv:2 text 'text-2': the model's outputs contain NaN or Inf",
    ):
        audit_texts(
            model,
            tokenizer,
            data.texts,
            data.labels,
            data.spurious,
            text_ids=data.text_ids,
            manifest=data.manifest,
        )


def test_a_text_csv_with_a_byte_order_mark_is_text_and_loads(tmp_path):
    """Excel writes UTF-8 with a BOM: the first column is still 'text', not '\\ufefftext'."""
    path = tmp_path / "bom.csv"
    body = (
        'text,label,spurious_tokens\n"a long,\nreview cheers",positive,cheers\n'
        "ok bye,negative,bye\n"
    )
    path.write_bytes("\ufeff".encode() + body.encode())
    assert is_text_manifest(path)
    loaded = load_text_audit_set(path, class_names=("negative", "positive"))
    assert loaded.texts[0] == "a long,\nreview cheers" and loaded.lines == (2, 4)
    assert loaded.text_ids == ["text-2", "text-4"]  # ids name the line each text starts on
