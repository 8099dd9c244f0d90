"""The local expansion of `Fn::ForEach` (devstack/language_extensions.py) that every reader of
template.yaml goes through: what CloudFormation's AWS::LanguageExtensions makes of a loop."""

from __future__ import annotations

import pytest

from devstack.language_extensions import LanguageExtensionError, expand
from devstack.template_resources import load_template


def test_a_nested_loop_substitutes_keys_refs_and_sub_strings() -> None:
    template = {
        "Resources": {
            "Fn::ForEach::Outer": [
                "Name",
                ["Api", "Pool"],
                {
                    "${Name}LogGroup": {"Properties": {"LogGroupName": {"Fn::Sub": "/aws/lambda/${${Name}Function}"}}},
                    "Fn::ForEach::Inner": [
                        "Metric",
                        ["Errors", "Throttles"],
                        {
                            "${Name}${Metric}Alarm": {
                                "Properties": {"MetricName": {"Ref": "Metric"}, "Other": {"Ref": "X"}}
                            }
                        },
                    ],
                },
            ],
            "Kept": {"Type": "AWS::SQS::Queue"},
        }
    }
    resources = expand(template)["Resources"]
    assert sorted(resources) == sorted(
        ["Kept"]
        + [f"{name}{kind}" for name in ("Api", "Pool") for kind in ("LogGroup", "ErrorsAlarm", "ThrottlesAlarm")]
    )
    assert resources["PoolLogGroup"]["Properties"]["LogGroupName"] == {"Fn::Sub": "/aws/lambda/${PoolFunction}"}
    assert resources["ApiThrottlesAlarm"]["Properties"] == {"MetricName": "Throttles", "Other": {"Ref": "X"}}
    assert "Fn::ForEach::Outer" in template["Resources"]  # the input is left as it was


def test_the_ampersand_form_drops_what_is_not_alphanumeric() -> None:
    loop = {
        "Fn::ForEach::Endpoints": [
            "Service",
            ["ecr.api", "logs"],
            {"Endpoint&{Service}": {"Name": {"Fn::Sub": "${Service}"}}},
        ]
    }
    assert expand(loop) == {
        "Endpointecrapi": {"Name": {"Fn::Sub": "ecr.api"}},
        "Endpointlogs": {"Name": {"Fn::Sub": "logs"}},
    }


@pytest.mark.parametrize(
    "loop",
    [
        ["Name", {"Ref": "SomeList"}, {"${Name}X": {}}],  # a collection only known at deploy time
        ["Name", ["A", "B"], {"Fixed": {}}],  # every item would make the same key
        ["Name", ["A"]],
    ],
)
def test_what_it_does_not_understand_is_refused(loop: list[object]) -> None:
    with pytest.raises(LanguageExtensionError):
        expand({"Resources": {"Fn::ForEach::Bad": loop}})


def test_the_template_read_locally_has_no_loop_left() -> None:
    template = load_template()
    assert "AWS::LanguageExtensions" in template["Transform"]

    def keys(value: object) -> list[str]:
        if isinstance(value, dict):
            return [str(key) for key in value] + [k for item in value.values() for k in keys(item)]
        if isinstance(value, list):
            return [k for item in value for k in keys(item)]
        return []

    assert not [key for key in keys(template) if key.startswith("Fn::ForEach")]
    assert "ApiFunctionLogGroup" in template["Resources"]
