"""DynamoDB on-demand request units, counted from the calls themselves.

A `CapacityMeter` attached to a DynamoDB client sees every call (botocore hooks), reads the
items it touches before and after (with a client of its own, which is not metered), and prices
each call with DynamoDB's published rules:

- reads: 1 RRU per 4 KB (rounded up) for a strongly consistent read, half for an eventually
  consistent one (every GSI query); a read that finds nothing still costs the minimum;
  a Query sums the sizes of the items it returns before rounding;
- writes: 1 WRU per 1 KB of the larger of the item before and after (rounded up, minimum 1);
  a conditional write whose condition fails still costs its WRUs;
- transactions: twice the units of the same writes (TransactWriteItems), also when cancelled;
- global secondary indexes: each write to an item that is (or was) in an index also writes the
  index: one write per 1 KB of the projected item (both indexes here project ALL), two when the
  index key changes, one to delete the entry when the item leaves a sparse index.

Item sizes follow DynamoDB's sizing rules (attribute names plus values; numbers by digit count).
The rules and prices: https://aws.amazon.com/dynamodb/pricing/on-demand/ and the developer guide's
"Read/write capacity mode" and "Managing settings on DynamoDB provisioned capacity tables" pages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

KB = 1024


def attribute_size(value: dict[str, Any]) -> int:
    ((kind, data),) = value.items()
    if kind == "S":
        return len(str(data).encode())
    if kind == "N":
        digits = str(data).lstrip("-").replace(".", "").lstrip("0") or "0"
        return (len(digits) + 1) // 2 + 1
    if kind == "B":
        return len(data)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(item.encode()) for item in data)
    if kind == "NS":
        return sum(attribute_size({"N": item}) for item in data)
    if kind == "L":
        return 3 + sum(attribute_size(item) + 1 for item in data)
    if kind == "M":
        return 3 + sum(len(name.encode()) + attribute_size(item) + 1 for name, item in data.items())
    raise ValueError(kind)


def item_size(item: dict[str, Any] | None) -> int:
    if not item:
        return 0
    return sum(len(name.encode()) + attribute_size(value) for name, value in item.items())


def write_units(*sizes: int) -> int:
    return max(1, math.ceil(max(sizes) / KB))


def read_units(size: int, *, consistent: bool) -> float:
    units = max(1, math.ceil(size / (4 * KB)))
    return float(units) if consistent else units / 2


@dataclass
class TableUsage:
    reads: float = 0.0
    writes: float = 0.0
    index_writes: float = 0.0
    calls: dict[str, int] = field(default_factory=dict)


@dataclass
class CapacityMeter:
    """Attach to the metered client; `usage` holds RRU/WRU per table."""

    reader: Any  # an unmetered DynamoDB client on the same backend
    usage: dict[str, TableUsage] = field(default_factory=dict)
    _indexes: dict[str, list[tuple[str, list[str]]]] = field(default_factory=dict)
    _keys: dict[str, list[str]] = field(default_factory=dict)

    def attach(self, client: Any) -> CapacityMeter:
        client.meta.events.register("before-parameter-build.dynamodb", self._before)
        client.meta.events.register("after-call.dynamodb", self._after)
        return self

    def detach(self, client: Any) -> None:
        client.meta.events.unregister("before-parameter-build.dynamodb", self._before)
        client.meta.events.unregister("after-call.dynamodb", self._after)

    def totals(self) -> tuple[float, float]:
        reads = sum(usage.reads for usage in self.usage.values())
        writes = sum(usage.writes + usage.index_writes for usage in self.usage.values())
        return reads, writes

    def reset(self) -> None:
        self.usage.clear()

    # -- hooks -------------------------------------------------------------------------------
    def _before(self, params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        writes = self._writes_of(model.name, params)
        context["capacity_meter"] = {
            "params": params,
            "before": [(table, key, self._get(table, key)) for table, key, _ in writes],
        }

    def _after(self, parsed: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        captured = context.pop("capacity_meter", None)
        if captured is None:
            return
        params = captured["params"]
        operation = model.name
        if operation == "GetItem":
            size = item_size(parsed.get("Item"))
            self._read(params["TableName"], operation, size, params.get("ConsistentRead", False))
        elif operation == "Query":
            size = sum(item_size(item) for item in parsed.get("Items", []))
            consistent = params.get("ConsistentRead", False) and "IndexName" not in params
            self._read(params["TableName"], operation, size, consistent)
        elif operation in ("PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems"):
            factor = 2 if operation == "TransactWriteItems" else 1
            for table, key, old in captured["before"]:
                new = self._get(table, key)
                usage = self._table(table, operation)
                usage.writes += factor * write_units(item_size(old), item_size(new))
                usage.index_writes += self._index_writes(table, old, new)

    # -- helpers -----------------------------------------------------------------------------
    def _table(self, table: str, operation: str) -> TableUsage:
        usage = self.usage.setdefault(table, TableUsage())
        usage.calls[operation] = usage.calls.get(operation, 0) + 1
        return usage

    def _read(self, table: str, operation: str, size: int, consistent: bool) -> None:
        self._table(table, operation).reads += read_units(size, consistent=consistent)

    def _writes_of(self, operation: str, params: dict[str, Any]) -> list[tuple[str, dict[str, Any], str]]:
        if operation in ("UpdateItem", "DeleteItem"):
            return [(params["TableName"], params["Key"], operation)]
        if operation == "PutItem":
            return [(params["TableName"], self._key_of(params["TableName"], params["Item"]), operation)]
        if operation == "TransactWriteItems":
            found = []
            for entry in params["TransactItems"]:
                ((kind, request),) = entry.items()
                key = request.get("Key") or self._key_of(request["TableName"], request["Item"])
                found.append((request["TableName"], key, kind))
            return found
        return []

    def _key_of(self, table: str, item: dict[str, Any]) -> dict[str, Any]:
        self._describe(table)
        return {name: item[name] for name in self._keys[table]}

    def _describe(self, table: str) -> None:
        if table in self._keys:
            return
        description = self.reader.describe_table(TableName=table)["Table"]
        self._keys[table] = [key["AttributeName"] for key in description["KeySchema"]]
        self._indexes[table] = [
            (index["IndexName"], [key["AttributeName"] for key in index["KeySchema"]])
            for index in description.get("GlobalSecondaryIndexes", [])
        ]

    def _get(self, table: str, key: dict[str, Any]) -> dict[str, Any] | None:
        item: dict[str, Any] | None = self.reader.get_item(TableName=table, Key=key, ConsistentRead=True).get("Item")
        return item

    def _index_writes(self, table: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> float:
        self._describe(table)
        units = 0.0
        for _, key_names in self._indexes[table]:
            was_in = bool(old) and all(name in old for name in key_names)  # type: ignore[operator]
            is_in = bool(new) and all(name in new for name in key_names)  # type: ignore[operator]
            if was_in and is_in:
                same_key = all(old[name] == new[name] for name in key_names)  # type: ignore[index]
                if old == new:
                    continue  # nothing changed (a failed condition): the index is not written
                if same_key:
                    units += write_units(item_size(new))
                else:  # the index entry moves: a delete and a put
                    units += write_units(item_size(old)) + write_units(item_size(new))
            elif is_in:
                units += write_units(item_size(new))
            elif was_in:
                units += write_units(item_size(old))
        return units
