"""The resource: who emits the records, from configuration and the environment.

``environ=`` isolates each case from the real environment, as ``Client`` does
when it is given one.
"""

from __future__ import annotations

import os
import platform
import socket
import sys
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

import tracerelay
from tracerelay.resource import detect_resource, system_info


def test_service_fields_from_arguments() -> None:
    resource = detect_resource(
        "checkout", service_version="1.4.2", environment="staging", environ={}
    )
    assert resource["service.name"] == "checkout"
    assert resource["service.version"] == "1.4.2"
    assert resource["deployment.environment"] == "staging"


def test_missing_version_and_environment_are_left_out() -> None:
    resource = detect_resource("checkout", environ={})
    assert "service.version" not in resource
    assert "deployment.environment" not in resource


def test_sdk_host_and_process_fields() -> None:
    resource = detect_resource("checkout", environ={})
    assert resource["telemetry.sdk.name"] == "tracerelay"
    assert resource["telemetry.sdk.language"] == "python"
    assert resource["telemetry.sdk.version"] == tracerelay.__version__
    assert resource["process.pid"] == os.getpid()
    assert resource["process.executable.path"] == sys.executable
    assert resource["process.runtime.version"] == platform.python_version()
    assert resource["host.name"] == socket.gethostname()


def test_a_client_describes_its_configuration() -> None:
    client = tracerelay.Client(
        service="billing",
        service_version="2.0",
        environment="dev",
        environ={"TRACERELAY_RESOURCE_ATTRIBUTES": "team=payments"},
    )
    client.shutdown()
    assert client.resource["service.name"] == "billing"
    assert client.resource["service.version"] == "2.0"
    assert client.resource["deployment.environment"] == "dev"
    assert client.resource["team"] == "payments"
    assert client.resource["process.pid"] == os.getpid()


def test_a_client_reads_the_service_from_its_environment() -> None:
    client = tracerelay.Client(environ={"TRACERELAY_SERVICE": "from-env"})
    client.shutdown()
    assert client.resource["service.name"] == "from-env"
    assert client.resource["deployment.environment"] == "production"


# --- resource attributes from the environment --------------------------------------------


def test_tracerelay_resource_attributes_are_added() -> None:
    env = {"TRACERELAY_RESOURCE_ATTRIBUTES": "team=payments, region = eu-west-1 ,k8s.pod=a-1"}
    resource = detect_resource("checkout", environ=env)
    assert resource["team"] == "payments"
    assert resource["region"] == "eu-west-1"
    assert resource["k8s.pod"] == "a-1"


def test_otel_resource_attributes_are_used_when_tracerelay_is_not_set() -> None:
    resource = detect_resource("checkout", environ={"OTEL_RESOURCE_ATTRIBUTES": "team=search"})
    assert resource["team"] == "search"


def test_tracerelay_resource_attributes_win_over_otel() -> None:
    env = {
        "TRACERELAY_RESOURCE_ATTRIBUTES": "team=payments",
        "OTEL_RESOURCE_ATTRIBUTES": "team=search,only.otel=1",
    }
    resource = detect_resource("checkout", environ=env)
    assert resource["team"] == "payments"
    # The documented rule is "one or the other", not a merge.
    assert "only.otel" not in resource


def test_an_empty_tracerelay_variable_falls_back_to_otel() -> None:
    env = {"TRACERELAY_RESOURCE_ATTRIBUTES": "", "OTEL_RESOURCE_ATTRIBUTES": "team=search"}
    assert detect_resource("checkout", environ=env)["team"] == "search"


def test_values_are_url_decoded() -> None:
    env = {"OTEL_RESOURCE_ATTRIBUTES": "owner=Jane%20Doe,path=%2Fsrv%2Fapp,eq=a%3Db,pct=100%25"}
    resource = detect_resource("checkout", environ=env)
    assert resource["owner"] == "Jane Doe"
    assert resource["path"] == "/srv/app"
    assert resource["eq"] == "a=b"
    assert resource["pct"] == "100%"


def test_malformed_pairs_are_ignored() -> None:
    env = {"TRACERELAY_RESOURCE_ATTRIBUTES": "novalue,=orphan, =blank,,good=yes,  ,empty="}
    resource = detect_resource("checkout", environ=env)
    baseline = detect_resource("checkout", environ={})
    added = {k: v for k, v in resource.items() if k not in baseline}
    assert added == {"good": "yes", "empty": ""}


def test_a_value_may_contain_an_equals_sign() -> None:
    env = {"TRACERELAY_RESOURCE_ATTRIBUTES": "query=a=b"}
    assert detect_resource("checkout", environ=env)["query"] == "a=b"


@given(
    st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9_.]{0,20}", fullmatch=True),
        st.text(max_size=30),
        max_size=8,
    )
)
def test_any_url_encoded_pairs_round_trip(pairs: dict[str, str]) -> None:
    text = ",".join(f"{key}={quote(value, safe='')}" for key, value in pairs.items())
    resource = detect_resource("checkout", environ={"TRACERELAY_RESOURCE_ATTRIBUTES": text})
    for key, value in pairs.items():
        if key == "service.name":
            continue  # a configured service always wins (tested below)
        assert resource[key] == value, key


# --- service name and environment: configuration wins, defaults give way -----------------


def test_otel_service_name_is_used_when_the_service_is_the_default() -> None:
    env = {"OTEL_SERVICE_NAME": "from-otel"}
    assert detect_resource("unknown_service", environ=env)["service.name"] == "from-otel"


def test_otel_service_name_never_overrides_a_configured_service() -> None:
    env = {"OTEL_SERVICE_NAME": "from-otel"}
    assert detect_resource("checkout", environ=env)["service.name"] == "checkout"


def test_an_empty_otel_service_name_is_ignored() -> None:
    resource = detect_resource("unknown_service", environ={"OTEL_SERVICE_NAME": ""})
    assert resource["service.name"] == "unknown_service"


def test_a_client_without_a_service_takes_otel_service_name() -> None:
    client = tracerelay.Client(environ={"OTEL_SERVICE_NAME": "from-otel"})
    client.shutdown()
    assert client.resource["service.name"] == "from-otel"
    assert client.config.service == "unknown_service"


@pytest.mark.parametrize("variable", ["TRACERELAY_RESOURCE_ATTRIBUTES", "OTEL_RESOURCE_ATTRIBUTES"])
def test_a_configured_service_wins_over_resource_attributes(variable: str) -> None:
    env = {variable: "service.name=legacy,team=payments"}
    resource = detect_resource("checkout", environ=env)
    assert resource["service.name"] == "checkout"
    assert resource["team"] == "payments"


def test_without_a_configured_service_the_attribute_pair_is_used() -> None:
    env = {"OTEL_RESOURCE_ATTRIBUTES": "service.name=legacy"}
    assert detect_resource("unknown_service", environ=env)["service.name"] == "legacy"


def test_otel_service_name_wins_over_the_attribute_pair() -> None:
    # OpenTelemetry's rule: OTEL_SERVICE_NAME takes precedence over service.name in the pairs.
    env = {"OTEL_SERVICE_NAME": "named", "OTEL_RESOURCE_ATTRIBUTES": "service.name=legacy"}
    assert detect_resource("unknown_service", environ=env)["service.name"] == "named"


def test_a_keyword_service_wins_in_a_client() -> None:
    client = tracerelay.Client(
        service="checkout",
        environ={"OTEL_RESOURCE_ATTRIBUTES": "service.name=legacy", "OTEL_SERVICE_NAME": "x"},
    )
    client.shutdown()
    assert client.resource["service.name"] == "checkout"


def test_configured_version_and_environment_win_over_resource_attributes() -> None:
    env = {"TRACERELAY_RESOURCE_ATTRIBUTES": "service.version=0.0.1,deployment.environment=prod"}
    resource = detect_resource(
        "checkout", service_version="1.4.2", environment="staging", environ=env
    )
    assert resource["service.version"] == "1.4.2"
    assert resource["deployment.environment"] == "staging"


def test_the_default_environment_gives_way_to_resource_attributes() -> None:
    client = tracerelay.Client(environ={"OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=qa"})
    client.shutdown()
    assert client.resource["deployment.environment"] == "qa"


def test_attribute_pairs_fill_in_an_unconfigured_version() -> None:
    env = {"OTEL_RESOURCE_ATTRIBUTES": "service.version=9.9"}
    assert detect_resource("checkout", environ=env)["service.version"] == "9.9"


def test_the_process_environment_is_read_when_no_environ_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRACERELAY_RESOURCE_ATTRIBUTES", "from.process=yes")
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    assert detect_resource("checkout")["from.process"] == "yes"
    assert "from.process" not in detect_resource("checkout", environ={})


def test_system_info_maps_onto_the_resource_and_leaves_out_what_it_lacks() -> None:
    environ = {"TRACERELAY_RESOURCE_ATTRIBUTES": "service.namespace=shop,service.instance.id=i-9"}
    resource = detect_resource("checkout", environ=environ)
    assert system_info(resource) == {
        "system_name": "checkout",
        "system_id": "shop",
        "system_instance_id": "i-9",
    }
    assert system_info(detect_resource("checkout", environ={})) == {"system_name": "checkout"}
