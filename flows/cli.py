"""The ``xai-gate`` command line.

Heavy imports (torch, MLflow, Prefect) happen inside the commands, so
``xai-gate --help`` answers at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from flows.options import with_policy_options
from pipelines.offline import apply_offline_defaults

apply_offline_defaults()  # before any library import reads the environment

app = typer.Typer(
    name="xai-gate",
    help="Block registry promotion of models that learned a shortcut.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _interruptible() -> None:
    """Block registry promotion of models that learned a shortcut."""
    from flows.interrupt import handle_interrupts

    handle_interrupts()  # Ctrl-C: one line and exit 130 within seconds (flows.interrupt)


@app.command()
@with_policy_options
def gate(
    version: str = typer.Option(..., "--version", help="Model version to gate."),
    policy: Path | None = typer.Option(
        None, "--policy", help="Gate policy YAML: every rule comes from it (rule flags ignored)."
    ),
    tracking_uri: str | None = typer.Option(
        None, help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)."
    ),
    force: bool = typer.Option(
        False,
        "--force",
        help="Gate again even if the version has a verdict under this policy and audit set.",
    ),
    task_runner: str = typer.Option(
        "threads", help="threads (one judging worker), or dask (the worker scales the stages out)."
    ),
    dask_address: str | None = typer.Option(
        None, help="With --task-runner dask: join this scheduler (tcp://host:8786)."
    ),
    dask_workers: int = typer.Option(
        2, help="With --task-runner dask and no address: workers of the local cluster."
    ),
    shards: int | None = typer.Option(
        None, help="Split the image audit into this many tasks (default: 1, or the workers)."
    ),
    **rules: Any,
) -> None:
    """Audit one model version and promote it only if it passes.

    Give --policy FILE, or --model and --audit-set with the rule options (each
    a key of the policy schema; unset ones take the schema's default).
    Exit 0 passed, 1 blocked, 2 error, 3 inconclusive (explanations failed their sanity check),
    4 passed but not promoted (the registry refused the alias).
    """
    from flows.run import exit_code, run_gate

    model, audit_set = rules.pop("model"), rules.pop("audit_set")
    if policy is None and (model is None or audit_set is None):
        typer.echo("error: give --policy FILE, or both --model and --audit-set", err=True)
        raise typer.Exit(2)
    if policy is not None:
        from pipelines.policy import PolicyError, load_policy, policy_options

        try:
            loaded = load_policy(policy)
        except PolicyError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        given = [option.flag for option in policy_options() if rules.get(option.name) is not None]
        if given:
            flags = ", ".join(given)
            typer.echo(f"note: {flags} ignored: --policy {policy} sets every rule", err=True)
        model, rules = model or loaded.model, {}
    outcome = run_gate(
        model,
        version,
        audit_set,
        policy_file=policy,
        tracking_uri=tracking_uri,
        force=force,
        task_runner=task_runner,
        dask_address=dask_address,
        dask_workers=dask_workers,
        shards=shards,
        **rules,
    )
    code = exit_code(outcome)
    typer.echo(outcome.message, err=code in (2, 4))
    if outcome.promoted:
        typer.echo(f"alias {outcome.alias!r} -> {outcome.model_name} v{version}")
    raise typer.Exit(code)


@app.command()
@with_policy_options
def discover(
    version: str = typer.Option(..., "--version", help="Model version to examine."),
    policy: Path | None = typer.Option(
        None, "--policy", help="Gate policy YAML: model, audit set and discovery rules."
    ),
    tracking_uri: str | None = typer.Option(
        None, help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)."
    ),
    write_audit_set: Path | None = typer.Option(
        None,
        "--write-audit-set",
        help="Write a labelled copy of the audit set here: the confirmed strategies' regions "
        "become its spurious masks.",
    ),
    strategy: list[int] = typer.Option(
        [],
        "--strategy",
        help="With --write-audit-set: write these strategies (rank, repeatable) instead of "
        "the confirmed ones.",
    ),
    **rules: Any,
) -> None:
    """Find shortcuts nobody labelled in one model version; no verdict, no alias.

    Prints the ranked strategies. With --write-audit-set DIR, a confirmed
    shortcut becomes a labelled audit set (manifest, images, masks): gate the
    next versions on it and the exact labelled checks apply.
    Exit 0: nothing confirmed; 1: a shortcut confirmed (written if asked); 2: error.
    """
    from rich.console import Console

    from flows.discover import run_discover
    from flows.outcome import EXPECTED_ERRORS, describe_error

    model, audit_set = rules.pop("model"), rules.pop("audit_set")
    if policy is None and (model is None or audit_set is None):
        typer.echo("error: give --policy FILE, or both --model and --audit-set", err=True)
        raise typer.Exit(2)
    if policy is not None:
        rules = {}
    if strategy and write_audit_set is None:
        typer.echo("error: --strategy chooses what --write-audit-set writes; give both", err=True)
        raise typer.Exit(2)
    try:
        result = run_discover(
            model,
            version,
            audit_set,
            policy_file=policy,
            tracking_uri=tracking_uri,
            write_to=write_audit_set,
            ranks=strategy or None,
            **rules,
        )
    except EXPECTED_ERRORS as exc:
        typer.echo(f"error: {describe_error(exc)}", err=True)
        raise typer.Exit(2) from None
    console = Console(width=160)
    columns = ["rank", "class", "size", "suspicion", "evidence", "flip_rate", "pull"]
    columns += ["decided_share", "status"]
    console.print(result.evidence.table[columns].round(2).to_string(index=False), highlight=False)
    for line in result.evidence.warnings():
        console.print(f"warning: {line}", highlight=False)
    if result.written is not None:
        console.print(
            f"wrote {result.written} (strategies {', '.join(map(str, result.ranks))}): gate the "
            f"next versions with --audit-set {result.written}",
            highlight=False,
        )
    raise typer.Exit(1 if result.confirmed else 0)


policy_app = typer.Typer(help="Write and check gate policy files.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")


@policy_app.command("init")
def policy_init(
    path: Path = typer.Argument(Path("xai-gate-policy.yaml"), help="Where to write it."),
    force: bool = typer.Option(False, help="Overwrite an existing file."),
) -> None:
    """Write a commented example policy to edit."""
    from pipelines.policy import EXAMPLE_POLICY

    if path.exists() and not force:
        typer.echo(f"error: {path} exists (use --force to overwrite)", err=True)
        raise typer.Exit(2)
    path.write_text(EXAMPLE_POLICY, encoding="utf-8")
    typer.echo(f"wrote {path}; check it with: xai-gate policy check {path}")


@policy_app.command("check")
def policy_check(path: Path = typer.Argument(..., help="The policy YAML.")) -> None:
    """Validate a policy; name the bad key and its line. Exit 0 valid, 1 valid but able to
    block nothing, 2 invalid."""
    from pipelines.policy import PolicyError, load_policy

    try:
        policy = load_policy(path)
    except PolicyError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    missing = "" if policy.audit_set.exists() else " (audit set not found yet)"
    typer.echo(
        f"{path}: valid; model {policy.model}, protected {', '.join(policy.protected_aliases)}, "
        f"audit set {policy.audit_set}{missing}, policy hash {policy.digest()[:12]}"
    )
    toothless = policy.blocks_nothing()
    if toothless:  # valid, but a gate that passes every model: exit 1 so automation notices
        typer.secho(f"warning: {path}: {toothless}", err=True, fg="red", bold=True)
        raise typer.Exit(1)


@app.command()
def sweep(
    policy: Path = typer.Option(..., "--policy", help="Gate policy YAML."),
    tracking_uri: str | None = typer.Option(None, help="MLflow tracking URI."),
) -> None:
    """Gate every version of the policy's model that has no verdict yet, once."""
    from flows.sweep import run_sweep

    outcomes = run_sweep(policy, tracking_uri=tracking_uri)
    for outcome in outcomes:
        typer.echo(outcome.message)
    if not outcomes:
        typer.echo("no ungated versions")


@app.command()
def serve(
    policy: Path = typer.Option(..., "--policy", help="Gate policy YAML."),
    cron: str = typer.Option("0 * * * *", help="When to sweep for new versions (cron)."),
    tracking_uri: str | None = typer.Option(None, help="MLflow tracking URI."),
) -> None:
    """Serve the sweeper on a schedule (Prefect ``serve``): new versions get gated."""
    from prefect import serve as prefect_serve

    from flows.sweep import sweep_deployment

    prefect_serve(sweep_deployment(policy, cron=cron, tracking_uri=tracking_uri))


@app.command()
def listen(
    policy: Path = typer.Option(..., "--policy", help="Gate policy YAML."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8765, help="Port to listen on."),
    tracking_uri: str | None = typer.Option(None, help="MLflow tracking URI."),
    register: str | None = typer.Option(
        None,
        help="Create or update the tracking server's webhook to deliver new versions to this "
        "URL (e.g. http://gate-host:8765/webhook) before listening.",
    ),
) -> None:
    """Gate each new version as MLflow's webhook announces it (signed deliveries only)."""
    import os

    from mlflow.exceptions import MlflowException

    from flows.listen import SECRET_ENV, serve_listener
    from flows.outcome import EXPECTED_ERRORS, describe_error

    secret = os.environ.get(SECRET_ENV, "")
    if not secret:
        typer.echo(
            f"error: set {SECRET_ENV} to the webhook's secret: unsigned deliveries are refused, "
            "so without one nothing could be gated",
            err=True,
        )
        raise typer.Exit(2)
    try:
        serve_listener(
            policy, host=host, port=port, secret=secret, tracking_uri=tracking_uri,
            register=register,
        )  # fmt: skip
    except EXPECTED_ERRORS as exc:
        typer.echo(f"error: {describe_error(exc)}", err=True)
        raise typer.Exit(2) from None
    except MlflowException as exc:  # registering the webhook: no SQL backend, bad URL
        typer.echo(f"error: cannot register the webhook: {exc.message}", err=True)
        raise typer.Exit(2) from None


@app.command()
def attention(
    sentence: str = typer.Argument(..., help="The text to look at."),
    layer: int = typer.Option(-1, help="Layer, 0-based (negative counts from the last)."),
    head: int | None = typer.Option(None, help="Head, 0-based; default: the average of all heads."),
    out: Path = typer.Option(Path("attention.png"), help="Where to write the PNG map."),
    model: Path | None = typer.Option(
        None, help="A local Hugging Face model folder (default: the packaged MiniLM)."
    ),
    html: Path | None = typer.Option(None, help="Also write the interactive HTML view here."),
    pronoun: str | None = typer.Option(
        None, help="Run the pronoun probe for this word (needs --candidates)."
    ),
    candidates: str | None = typer.Option(
        None, help="Comma-separated candidate nouns for the pronoun probe."
    ),
) -> None:
    """Draw a Transformer's token x token attention map for one layer and head, offline."""
    import io

    import matplotlib.pyplot as plt

    from flows.files import write_all
    from pipelines.report.attention_html import attention_html
    from pipelines.report.attention_plots import attention_map
    from xai_checks.attention import attention_maps
    from xai_checks.errors import XAICheckError
    from xai_checks.probes import pronoun_probe
    from xai_checks.text_models import load_text_model

    try:
        if pronoun is not None and not candidates:
            raise XAICheckError("--pronoun needs --candidates, e.g. --candidates ball,box")
        network, tokenizer = load_text_model(model)
        maps = attention_maps(network, tokenizer, [sentence])
        n_layers, n_heads = maps.weights.shape[1:3]
        if not -n_layers <= layer < n_layers:
            raise XAICheckError(f"--layer {layer} is out of range: the model has {n_layers} layers")
        if head is not None and not -n_heads <= head < n_heads:
            raise XAICheckError(f"--head {head} is out of range: the model has {n_heads} heads")
        tokens = maps.tokens[0]
        length = len(tokens)
        weights = maps.weights[0, :, :, :length, :length]
        matrix = weights[layer].mean(dim=0) if head is None else weights[layer, head]
        which = f"layer {layer % n_layers}, " + (
            "heads averaged" if head is None else f"head {head % n_heads}"
        )
        # Everything is computed before anything is written: an error leaves no output.
        figure = attention_map(tokens, matrix, title=f"{which}: {sentence}")
        try:
            png = io.BytesIO()
            figure.savefig(png, format="png", dpi=120, bbox_inches="tight")
        finally:
            plt.close(figure)
        outputs = {out: png.getvalue()}
        if html is not None:
            outputs[html] = attention_html(tokens, weights, title=sentence).encode("utf-8")
        lines = []
        if pronoun is not None and candidates:
            probe = pronoun_probe(
                network, tokenizer, sentence, pronoun, [c.strip() for c in candidates.split(",")]
            )
            for index, (winner, row) in enumerate(
                zip(probe.winner_by_layer(), probe.head_average, strict=True)
            ):
                shares = ", ".join(
                    f"{c} {float(w):.3f}" for c, w in zip(probe.candidates, row, strict=True)
                )
                lines.append(f"layer {index}: '{pronoun}' -> {winner}  ({shares})")
        write_all(outputs)
        typer.echo(f"wrote {out} ({which}, {length} tokens)")
        if html is not None:
            typer.echo(f"wrote {html}")
        for line in lines:
            typer.echo(line)
    except (XAICheckError, OSError, ValueError) as exc:  # transformers: ValueError/OSError
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def demo(
    workdir: Path = typer.Option(Path("demo_data"), help="Where the audit set is written."),
    n_train: int = typer.Option(2000, help="Training images per model."),
    epochs: int = typer.Option(8, help="Training epochs per model."),
    n_audit: int = typer.Option(64, help="Images in the audit set."),
    tracking_uri: str | None = typer.Option(None, help="MLflow tracking URI."),
) -> None:
    """Train a shortcut and a clean lesion classifier, gate both, print the verdicts."""
    from rich.console import Console

    from flows.demo import DemoConfig, champion_version, demo_succeeded, demo_table, run_demo
    from pipelines.tracking import configure_tracking
    from pipelines.verdict.decision import DEFAULT_ALIAS

    config = DemoConfig(
        workdir=workdir,
        n_train=n_train,
        epochs=epochs,
        n_audit=n_audit,
        tracking_uri=tracking_uri,
    )
    uri = configure_tracking(tracking_uri)
    rows = run_demo(config)

    table = demo_table(rows)
    console = Console()
    if not console.is_terminal:  # logs and pipes: room for the whole table
        console = Console(width=max(console.width, 175))
    console.print(table)
    for row in rows:
        console.print(f"  v{row.outcome.version}: {row.outcome.message}", highlight=False)
    console.print("")
    for name in (
        config.model_name,
        config.text_model_name,
        config.unlabelled_model_name,
        config.fixed_place_model_name,
    ):
        console.print(f"alias {DEFAULT_ALIAS!r} -> {name} v{champion_version(name)}")
    console.print(
        "Review the evidence (overlays, scores, GX results) in the MLflow UI:\n"
        f"  .venv/bin/mlflow ui --backend-store-uri {uri}\n"
        "  then open experiment 'xai-gate' and the models 'lesion-classifier', "
        "'review-classifier', 'lesion-classifier-unlabelled' and "
        "'lesion-classifier-fixed-tag' (discovery: "
        "xai/discovery_*.png, xai/report.html).",
        highlight=False,
    )
    if not demo_succeeded(rows):
        console.print(
            "[red]demo did not reach the expected verdicts (each v1 blocked, each v2 passed)[/red]"
        )
        raise typer.Exit(1)


@app.command(hidden=True)
def example(
    dest: Path = typer.Option(Path("mlruns_example"), help="Where the store goes."),
) -> None:
    """Write the small committed MLflow store of the demo (``make example``)."""
    from flows.example import make_example

    store = make_example(dest)
    size = sum(p.stat().st_size for p in store.rglob("*") if p.is_file())
    typer.echo(f"wrote {store} ({size / 1e6:.1f} MB)")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
