"""Rewritten RequestAuthentications still satisfy Istio's CRD schema.

The schema comes from the registry package cloudcoil-models-istio: pydantic models generated
from Istio's CRDs (``security.istio.io`` v1 and v1beta1). They carry the OpenAPI part of the
schema (field names and types, ``issuer`` required, ``jwksUri`` 1 to 2,048 characters) but
neither the CRD's CEL rules nor its rejection of unknown fields. So :func:`validate` also
checks the http/https scheme by hand and compares the model's dump with the input, which
catches a misspelled or invented field.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pydantic
import pytest
from cloudcoil.models.istio.security import v1, v1beta1
from hypothesis import HealthCheck, given, settings
from ruamel.yaml import YAML

from jwks_mirror.cli import main

from .test_rewrite_properties import manifests, rewrite_text

DATA = Path(__file__).parents[1] / "data" / "manifests"
MIRROR = "http://jwks-mirror.jwks-mirror.svc:8080"
MODELS: dict[str, Any] = {
    "security.istio.io/v1": v1.RequestAuthentication,
    "security.istio.io/v1beta1": v1beta1.RequestAuthentication,
}


class SchemaViolation(AssertionError):
    pass


def request_authentications(text: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def visit(doc: Any) -> None:
        if not isinstance(doc, dict):
            return
        if doc.get("kind") == "List":
            for item in doc.get("items") or []:
                visit(item)
        elif doc.get("kind") == "RequestAuthentication" and doc.get("apiVersion") in MODELS:
            found.append(doc)

    for doc in YAML(typ="safe", pure=True).load_all(io.StringIO(text)):
        visit(doc)
    return found


def validate(resource: dict[str, Any]) -> None:
    """Raise SchemaViolation unless ``resource`` is a valid Istio RequestAuthentication."""
    model = MODELS[resource["apiVersion"]]
    try:
        parsed = model.model_validate(resource)
    except pydantic.ValidationError as exc:
        raise SchemaViolation(str(exc)) from exc
    spec = parsed.spec.model_dump(by_alias=True, exclude_none=True, mode="json")
    if spec != _without_nulls(resource.get("spec", {})):
        raise SchemaViolation(f"fields outside the schema: {resource.get('spec')} != {spec}")
    for index, rule in enumerate(resource.get("spec", {}).get("jwtRules") or []):
        uri = rule.get("jwksUri")
        if uri is not None and urlsplit(uri).scheme not in ("http", "https"):
            raise SchemaViolation(f"jwtRules[{index}].jwksUri: scheme must be http or https")


def _without_nulls(value: Any) -> Any:
    # The API server treats an explicit null like an absent field, and so does the model.
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


CASES = sorted(p.name for p in DATA.iterdir() if p.is_dir())


@pytest.mark.parametrize("case", CASES)
def test_golden_outputs_are_valid(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "input.yaml"
    shutil.copy(DATA / case / "input.yaml", source)
    args_file = DATA / case / "args"
    extra = args_file.read_text().split() if args_file.exists() else []
    assert main(["rewrite", str(source), "--mirror-url", MIRROR, *extra]) == 0
    resources = request_authentications(capsys.readouterr().out)
    assert resources or case == "nothing-to-change"
    for resource in resources:
        validate(resource)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(manifests())
def test_generated_outputs_are_valid(text: str) -> None:
    for resource in request_authentications(rewrite_text(text)):
        validate(resource)


def _valid() -> dict[str, Any]:
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "RequestAuthentication",
        "metadata": {"name": "x", "namespace": "y"},
        "spec": {"jwtRules": [{"issuer": "i", "jwksUri": f"{MIRROR}/keys-y/jwks.json"}]},
    }


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        ({"issuer": "i", "jwksUri": "http://m/" + "x" * 2048}, "at most 2048"),
        ({"issuer": "i", "jwksUri": ""}, "at least 1"),
        ({"jwksUri": "http://m/k/jwks.json"}, "issuer"),
        ({"issuer": "i", "jwksURI": "http://m/k/jwks.json"}, "fields outside the schema"),
        ({"issuer": "i", "jwksUri": "ftp://m/k/jwks.json"}, "scheme must be http or https"),
    ],
)
def test_the_validator_rejects_what_istio_rejects(rule: dict[str, Any], problem: str) -> None:
    validate(_valid())
    resource = _valid()
    resource["spec"]["jwtRules"] = [rule]
    with pytest.raises(SchemaViolation, match=problem):
        validate(resource)
