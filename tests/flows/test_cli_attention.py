"""`xai-gate attention`: the packaged MiniLM offline, any local model, clear errors."""

from __future__ import annotations

from typer.testing import CliRunner

from flows.cli import app

SENTENCE = "The ball didn't fit in the box because it was too big."


def test_attention_map_pronoun_probe_and_html_offline(tmp_path, minilm_ball_box):
    out, page = tmp_path / "map.png", tmp_path / "view.html"
    args = ["attention", SENTENCE, "--layer", "4", "--head", "3", "--out", str(out)]
    result = CliRunner().invoke(
        app, [*args, "--html", str(page), "--pronoun", "it", "--candidates", "ball,box"]
    )
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(b"\x89PNG") and out.stat().st_size > 10_000
    assert "wrote" in result.output and "layer 4, head 3, 17 tokens" in result.output
    # Each layer's answer is the head-averaged winner of transformers' own output_attentions
    # (the upper three layers pick 'ball' on the pinned MiniLM weights).
    reference = minilm_ball_box.mean(1)
    winners = ["ball" if ball > box else "box" for ball, box in reference.tolist()]
    assert winners[3:] == ["ball"] * 3
    for layer, winner in enumerate(winners):
        assert f"layer {layer}: 'it' -> {winner}" in result.output
    assert "[CLS]" in page.read_text()


def test_any_local_model_path_and_clear_errors(tmp_path):
    from xai_checks.text_models import default_text_model_path

    ok = CliRunner().invoke(
        app,
        [
            "attention",
            "hello world",
            "--model",
            str(default_text_model_path()),
            "--out",
            str(tmp_path / "a.png"),
        ],
    )
    assert ok.exit_code == 0, ok.output
    assert "layer 5, heads averaged" in ok.output  # default: last layer, heads averaged
    out = str(tmp_path / "x.png")
    missing = CliRunner().invoke(
        app, ["attention", "hi", "--model", str(tmp_path / "nope"), "--out", out]
    )
    assert missing.exit_code == 2 and "nope" in missing.output
    bad = CliRunner().invoke(app, ["attention", "hi", "--layer", "9", "--out", out])
    assert bad.exit_code == 2 and "out of range: the model has 6 layers" in bad.output
    probe = CliRunner().invoke(app, ["attention", "hi", "--pronoun", "it", "--out", out])
    assert probe.exit_code == 2 and "--pronoun needs --candidates" in probe.output
    assert not (tmp_path / "x.png").exists()  # nothing written on an error


def test_another_local_model_folder_works(tmp_path):
    """A tiny BERT saved to disk with its tokenizer: any local HF folder, not just MiniLM."""
    from transformers import AutoTokenizer

    from xai_checks.examples.toy_text_models import tiny_bert_classifier
    from xai_checks.text_models import default_text_model_path

    folder = tmp_path / "tiny"
    tokenizer = AutoTokenizer.from_pretrained(str(default_text_model_path()))
    tiny_bert_classifier(tokenizer.vocab_size).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    out = tmp_path / "tiny.png"
    result = CliRunner().invoke(
        app,
        ["attention", "a lovely lamp", "--model", str(folder), "--head", "-1", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert "layer 1, head 3, 5 tokens" in result.output  # 2 layers x 4 heads; -1 is the last
    assert out.read_bytes().startswith(b"\x89PNG")


def test_an_unreachable_tracking_server_is_a_clear_error_in_bounded_time(tmp_path):
    import socket
    import time

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    manifest = tmp_path / "m.csv"
    manifest.write_text("image,label,spurious_mask\n")
    start = time.monotonic()
    result = CliRunner().invoke(
        app,
        [
            "gate",
            "--model",
            "m",
            "--version",
            "1",
            "--audit-set",
            str(manifest),
            "--tracking-uri",
            f"http://127.0.0.1:{port}",
        ],
    )
    assert result.exit_code == 2, result.output
    assert f"cannot reach the MLflow tracking server at http://127.0.0.1:{port}" in result.output
    assert time.monotonic() - start < 120


def test_a_very_long_text_makes_a_bounded_figure_and_an_error_writes_nothing(tmp_path):
    from PIL import Image

    long_text = " ".join(["the ball did not fit in the box because it was too big"] * 40)
    out, page = tmp_path / "long.png", tmp_path / "long.html"
    result = CliRunner().invoke(app, ["attention", long_text, "--out", str(out)])
    assert result.exit_code == 0, result.output
    with Image.open(out) as image:
        assert image.width * image.height < 4_000_000  # the title no longer widens the canvas
    # An error after the map was drawn (the probe's word is not in the text): nothing written.
    probe = ["--pronoun", "zebra", "--candidates", "ball,box"]
    args = ["attention", SENTENCE, "--out", str(tmp_path / "x.png"), "--html", str(page)]
    failed = CliRunner().invoke(app, [*args, *probe])
    assert failed.exit_code == 2, failed.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.png"]


def test_write_all_writes_every_file_or_none(tmp_path):
    import pytest

    from flows.files import write_all

    write_all({tmp_path / "a": b"1", tmp_path / "b": b"2"})
    assert (tmp_path / "a").read_bytes() == b"1" and (tmp_path / "b").read_bytes() == b"2"
    with pytest.raises(OSError):
        write_all({tmp_path / "c": b"3", tmp_path / "missing-dir" / "d": b"4"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]
