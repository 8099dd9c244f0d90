"""`Fn::ForEach` expanded as CloudFormation's `AWS::LanguageExtensions` transform does, for the
local readers of template.yaml (devstack's resources, the template tests, tests/reliability's
offline SAM translation). The one place the loops are expanded locally: standard library only,
so .venv-sam's Python (which has no devstack dependencies) imports it too.

What is supported is what the template uses: a loop over a literal list of strings, anywhere a
mapping may hold one (Resources, Outputs, Conditions, a resource's properties), nested loops, and
the identifier in the output key (`${Name}`, and `&{Name}` with non-alphanumerics dropped), in
`Ref`, and in `Fn::Sub` strings (`!Sub "/aws/lambda/${${Name}Function}"` becomes
`!Sub "/aws/lambda/${ApiFunction}"`). Anything else is refused loudly, not guessed.
"""

from __future__ import annotations

import copy
import re
from typing import Any

FOR_EACH = "Fn::ForEach::"


class LanguageExtensionError(ValueError):
    """A loop the template uses that this expansion does not understand."""


def expand(template: dict[str, Any]) -> dict[str, Any]:
    """The template with every `Fn::ForEach` loop replaced by the keys it generates."""
    expanded = _expand(copy.deepcopy(template), path="")
    assert isinstance(expanded, dict)
    return expanded


def _expand(value: Any, path: str) -> Any:
    if isinstance(value, list):
        return [_expand(item, f"{path}[{index}]") for index, item in enumerate(value)]
    if not isinstance(value, dict):
        return value
    result: dict[str, Any] = {}
    for key, item in value.items():
        if isinstance(key, str) and key.startswith(FOR_EACH):
            for generated_key, generated in _loop(key, item, path).items():
                if generated_key in result or generated_key in value:
                    raise LanguageExtensionError(f"{path}/{key} generates {generated_key!r} twice")
                result[generated_key] = generated
        else:
            result[key] = _expand(item, f"{path}/{key}")
    return result


def _loop(key: str, argument: Any, path: str) -> dict[str, Any]:
    where = f"{path}/{key}"
    if not (isinstance(argument, list) and len(argument) == 3):
        raise LanguageExtensionError(f"{where}: expected [identifier, collection, {{output key: value}}]")
    identifier, collection, outputs = argument
    if not (isinstance(identifier, str) and re.fullmatch(r"[A-Za-z0-9]+", identifier)):
        raise LanguageExtensionError(f"{where}: the identifier must be alphanumeric, got {identifier!r}")
    if not (isinstance(collection, list) and all(isinstance(item, str) for item in collection)):
        raise LanguageExtensionError(f"{where}: only a literal list of strings is supported as the collection")
    if not isinstance(outputs, dict):
        raise LanguageExtensionError(f"{where}: the third element maps output keys to values")
    generated: dict[str, Any] = {}
    for item in collection:
        for output_key, output_value in outputs.items():
            if output_key.startswith(FOR_EACH):  # a nested loop: the outer identifier first
                nested = {_replace_in_text(output_key, identifier, item): _substitute(output_value, identifier, item)}
                generated.update(_expand(nested, where))
                continue
            new_key = _replace_in_text(output_key, identifier, item)
            if new_key == output_key and len(collection) > 1:
                raise LanguageExtensionError(f"{where}: output key {output_key!r} does not use ${{{identifier}}}")
            generated[new_key] = _expand(_substitute(output_value, identifier, item), f"{where}/{new_key}")
    return generated


def _replace_in_text(text: str, identifier: str, item: str) -> str:
    text = text.replace(f"${{{identifier}}}", item)
    return text.replace(f"&{{{identifier}}}", re.sub(r"[^0-9A-Za-z]+", "", item))


def _substitute(value: Any, identifier: str, item: str) -> Any:
    """The identifier replaced in keys, `Ref`s and `Fn::Sub` strings (as CloudFormation does)."""
    if isinstance(value, list):
        return [_substitute(element, identifier, item) for element in value]
    if not isinstance(value, dict):
        return value
    if value == {"Ref": identifier}:
        return item
    result: dict[str, Any] = {}
    for key, element in value.items():
        if key == "Fn::Sub":
            if isinstance(element, str):
                result[key] = _replace_in_text(element, identifier, item)
            else:
                text, variables = element
                result[key] = [_replace_in_text(text, identifier, item), _substitute(variables, identifier, item)]
            continue
        new_key = _replace_in_text(key, identifier, item) if isinstance(key, str) else key
        result[new_key] = _substitute(element, identifier, item)
    return result
