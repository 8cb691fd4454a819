"""Schema fingerprints: the Avro spec's, which the codec writes, and Apache avro-python's.

Both are the CRC-64-AVRO (64-bit Rabin) fingerprint of a canonical JSON text of the schema,
little-endian as single-object encoding carries it. They differ in the text:

- the spec's Parsing Canonical Form (fastavro, Java's SchemaNormalization) writes every
  primitive as its bare name, `"string"`;
- Apache avro-python (`avro.schema.Schema.fingerprint`, 1.12) hashes
  `json.dumps(schema.to_canonical_json(), separators=(",", ":"))`, where a primitive written
  as an object keeps the object form `{"type":"string"}` whenever the object carries any
  attribute avro-python does not reserve (`logicalType`, or any custom one such as
  `connect.name`). Reserved ones (`doc`, `name`, `namespace`, ...) do not count;
- avro-python also writes a `fixed` type out in full wherever it is used again, where the
  spec writes its name (no stagecast schema has a fixed type).

avro-python has no single-object encoder: a Python producer writes the marker, then
`schema.fingerprint("CRC-64-AVRO")`, then the body. Every other rule (full names, the
attributes kept and their order, records and enums written by name after their first use)
is the same in both, and a unit test checks this module against avro-python itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from fastavro.schema import fingerprint as crc64_hex
from fastavro.schema import to_parsing_canonical_form

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_NAMED = frozenset({"record", "error", "enum", "fixed"})
# avro.schema.SCHEMA_RESERVED_PROPS: attributes avro-python does not count as "other" ones.
_AVRO_PYTHON_RESERVED = frozenset(
    {"type", "name", "namespace", "fields", "items", "size", "symbols", "values", "doc"}
)


def fingerprint_of(schema: Mapping[str, Any]) -> bytes:
    """CRC-64-AVRO of the schema's Parsing Canonical Form, little-endian as on the wire."""
    return _crc64(to_parsing_canonical_form(dict(schema)))


def avro_python_fingerprint_of(schema: Mapping[str, Any]) -> bytes:
    """The fingerprint Apache avro-python computes for the same schema (see the module doc)."""
    return _crc64(avro_python_canonical_form(schema))


def avro_python_canonical_form(schema: Mapping[str, Any]) -> str:
    """The canonical text avro-python fingerprints (how it differs: see the module doc)."""
    try:
        canonical = _canonical(dict(schema), namespace="", seen={})
    except KeyError as missing:
        raise ValueError(f"not an Avro schema: an attribute {missing} is missing") from None
    return orjson.dumps(canonical).decode()


def _crc64(canonical: str) -> bytes:
    return bytes.fromhex(crc64_hex(canonical, "CRC-64-AVRO"))


def _full_name(name: str, namespace: str) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _canonical(schema: Any, namespace: str, seen: dict[str, Any]) -> Any:
    """`seen` maps each named type met so far to what a later use of it writes."""
    if isinstance(schema, list):
        return [_canonical(branch, namespace, seen) for branch in schema]
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            return schema
        name = _full_name(schema, namespace)
        return seen.get(name, name)
    if not isinstance(schema, dict) or not isinstance(schema.get("type"), str):
        raise ValueError(f"not an Avro schema: {schema!r}")
    kind = schema["type"]
    if kind in _PRIMITIVES:
        # Where avro-python and the spec part ways: an annotated primitive stays an object.
        annotated = any(key not in _AVRO_PYTHON_RESERVED for key in schema)
        return {"type": kind} if annotated else kind
    if kind == "array":
        return {"type": kind, "items": _canonical(schema["items"], namespace, seen)}
    if kind == "map":
        return {"type": kind, "values": _canonical(schema["values"], namespace, seen)}
    if kind not in _NAMED:
        raise ValueError(f"not an Avro schema: unknown type {kind!r}")
    name = _full_name(str(schema["name"]), str(schema.get("namespace") or namespace))
    if kind == "fixed":
        # avro-python writes a fixed type out in full every time, never by its name.
        seen[name] = {"name": name, "type": kind, "size": schema["size"]}
        return seen[name]
    if name in seen:
        return seen[name]
    seen[name] = name
    if kind == "enum":
        return {"name": name, "type": kind, "symbols": schema["symbols"]}
    inner = name.rpartition(".")[0]
    fields = [
        {"name": field["name"], "type": _canonical(field["type"], inner, seen)}
        for field in schema["fields"]
    ]
    return {"name": name, "type": kind, "fields": fields}
