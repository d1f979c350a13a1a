"""Metadata chooses among builders the operator allowed; it never names code that runs."""

from __future__ import annotations

import mlflow
import pytest
import torch

from pipelines.tracking.builders import BUILDERS_ENV, BuilderRefused, resolve_builder
from pipelines.tracking.models import (
    STATE_DICT_FILE,
    ModelLoadError,
    load_model_version,
    weights_only_metadata,
)
from xai_checks.examples.toy_models import SmallCNN


def _log_weights_only(model: torch.nn.Module, name: str, metadata: dict, tmp_path) -> None:
    weights = tmp_path / STATE_DICT_FILE
    torch.save(model.state_dict(), weights)
    with mlflow.start_run():
        mlflow.pytorch.log_model(
            model,
            name="model",
            registered_model_name=name,
            serialization_format="pickle",
            metadata={"class_names": ["a", "b"], **metadata},
            extra_files=[str(weights)],
            pip_requirements=["torch"],
        )


@pytest.mark.parametrize(
    "reference",
    [
        "os:system",
        "subprocess:run",
        "builtins:eval",
        "torch.hub:load",
        "importlib:import_module",
        "torchvision.models:get_model",  # in the module, but not a model builder
        "torchvision.models._api:register_model",
        "transformers:pipeline",  # in transformers, but not a model class
        "transformers:AutoModel",  # a factory that may download, not a model class
        "os.path:join",
        "xai_checks.examples.toy_models:SmallCNN",  # installed, but not allowed by the operator
    ],
)
def test_code_the_operator_did_not_allow_is_refused_before_any_import(reference, monkeypatch):
    monkeypatch.delenv(BUILDERS_ENV, raising=False)
    with pytest.raises(BuilderRefused) as refused:
        resolve_builder(reference, {"command": "touch /tmp/owned"}, where="models:/m/1")
    message = str(refused.value)
    assert "metadata key 'architecture'" in message and repr(reference) in message


@pytest.mark.parametrize("reference", ["os", "os:", ":system", "a b:c", 3, None, ["os:system"]])
def test_a_reference_that_is_not_package_module_name_is_refused(reference):
    with pytest.raises(BuilderRefused, match="not a builder reference"):
        resolve_builder(reference, {})


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ("num_classes=2", "init_kwargs"),
        ({"num_classes": object()}, "init_kwargs.num_classes"),
        ({3: 2}, "init_kwargs"),
        ({"weights": "IMAGENET1K_V1"}, "init_kwargs.weights"),
    ],
)
def test_init_kwargs_are_plain_data_and_never_ask_for_downloaded_weights(kwargs, key):
    with pytest.raises(BuilderRefused, match=f"'{key}'"):
        resolve_builder("torchvision.models:resnet18", kwargs)


def test_torchvision_builders_and_transformers_classes_are_allowed_by_default(monkeypatch):
    monkeypatch.delenv(BUILDERS_ENV, raising=False)
    resnet = resolve_builder("torchvision.models:resnet18", {"num_classes": 3})()
    assert resnet.fc.out_features == 3
    bert = resolve_builder(
        "transformers:BertForSequenceClassification",
        {
            "vocab_size": 50,
            "hidden_size": 16,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 32,
            "num_labels": 2,
        },
    )()
    assert type(bert).__name__ == "BertForSequenceClassification"
    assert bert.config.num_labels == 2


def test_the_operator_allows_more_by_name_or_by_module(monkeypatch):
    exact = "xai_checks.examples.toy_models:SmallCNN"
    assert isinstance(resolve_builder(exact, {"width": 8}, extra=(exact,))(), SmallCNN)
    monkeypatch.setenv(BUILDERS_ENV, "xai_checks.examples.toy_models:*")
    assert isinstance(resolve_builder(exact, {"width": 8})(), SmallCNN)
    with pytest.raises(BuilderRefused):  # a module allowed is not its private names
        resolve_builder("xai_checks.examples.toy_models:_private", {})
    monkeypatch.setenv(BUILDERS_ENV, "not a pattern")
    with pytest.raises(Exception, match="XAI_GATE_MODEL_BUILDERS"):
        resolve_builder(exact, {})


def test_os_system_in_metadata_runs_nothing_and_is_a_clear_error(tracking_uri, tmp_path):
    witness = tmp_path / "owned"
    _log_weights_only(
        SmallCNN(),
        "hostile",
        weights_only_metadata("os:system", command=f"touch {witness}"),
        tmp_path,
    )
    with pytest.raises(ModelLoadError) as refused:
        load_model_version("hostile", "1")
    assert not witness.exists()
    assert "metadata key 'architecture' = 'os:system' is not an allowed model builder" in str(
        refused.value
    )


def test_a_gate_of_such_a_model_is_an_error_exit_2_naming_key_and_value(
    tracking_uri, tmp_path, lesion_gate
):
    from flows.run import exit_code, run_gate

    witness = tmp_path / "owned"
    _log_weights_only(
        SmallCNN(),
        "hostile-gate",
        weights_only_metadata("subprocess:getoutput", cmd=f"touch {witness}"),
        tmp_path,
    )
    policy = lesion_gate.policy(tmp_path, "hostile-gate", n=4)
    outcome = run_gate(None, "1", policy_file=policy)
    assert exit_code(outcome) == 2 and not witness.exists()
    assert "'architecture' = 'subprocess:getoutput'" in outcome.message


def test_a_torchvision_model_logged_weights_only_loads_its_weights(tracking_uri, tmp_path):
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=2)
    metadata = weights_only_metadata("torchvision.models:resnet18", num_classes=2)
    _log_weights_only(model, "tv", metadata, tmp_path)
    loaded = load_model_version("tv", "1")
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.module.state_dict()[name], tensor), name
    assert len(loaded.digest) == 64


def test_init_kwargs_that_do_not_fit_the_builder_are_a_clear_error(tracking_uri, tmp_path):
    metadata = weights_only_metadata("torchvision.models:resnet18", no_such_argument=1)
    _log_weights_only(SmallCNN(), "misfit", metadata, tmp_path)
    with pytest.raises(ModelLoadError, match="'init_kwargs' does not fit"):
        load_model_version("misfit", "1")


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"class_names": 5}, "metadata key 'class_names' must be a list of two or more distinct"),
        ({"class_names": ["only"]}, "metadata key 'class_names' must be a list of two or more"),
        ({"class_names": ["a", "a"]}, "metadata key 'class_names' must be a list of two or more"),
        ({"class_names": [{"x": 1}, "b"]}, "metadata key 'class_names' must be a list"),
        ({"modality": ["text"]}, "metadata key 'modality' must be 'image' or 'text'"),
    ],
)
def test_metadata_of_the_wrong_shape_is_one_line_naming_the_key(
    metadata, message, tracking_uri, tmp_path
):
    with mlflow.start_run():
        mlflow.pytorch.log_model(
            SmallCNN(),
            name="model",
            registered_model_name="odd-metadata",
            serialization_format="pickle",
            metadata=metadata,
            pip_requirements=["torch"],
        )
    with pytest.raises(ModelLoadError) as refused:
        load_model_version("odd-metadata", "1")
    text = str(refused.value)
    assert text.startswith("models:/odd-metadata/1: ") and message in text and "\n" not in text
