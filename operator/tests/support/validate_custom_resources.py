"""Validate custom resources against the openAPIV3Schema of their CustomResourceDefinition.

Usage: validate_custom_resources.py CRD_FILE OBJECTS_FILE...

Each OBJECTS_FILE is multi-document YAML. Every object must have the CRD's group and kind, and a
version the CRD serves; it is validated against that version's schema, made strict the way the
API server's strict field validation is: an object schema that lists `properties` (and does not
preserve unknown fields) rejects any other property. Prints one line per object and exits 1 if
any object fails.
"""

import sys

import jsonschema
import yaml


def strict(schema):
    """A copy of `schema` in which listed properties are the only ones allowed."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def main(crd_file, object_files):
    with open(crd_file) as f:
        crd = yaml.safe_load(f)
    group = crd["spec"]["group"]
    kind = crd["spec"]["names"]["kind"]
    schemas = {
        f"{group}/{version['name']}": strict(version["schema"]["openAPIV3Schema"])
        for version in crd["spec"]["versions"]
        if version.get("served")
    }
    failed = 0
    checked = 0
    for path in object_files:
        with open(path) as f:
            objects = [o for o in yaml.safe_load_all(f) if o is not None]
        for obj in objects:
            name = f"{obj.get('kind')} {obj.get('metadata', {}).get('name')}"
            schema = schemas.get(obj.get("apiVersion"))
            if obj.get("kind") != kind or schema is None:
                print(f"FAIL {path}: {name}: not a served version of {kind} ({sorted(schemas)})")
                failed += 1
                continue
            errors = sorted(
                jsonschema.Draft7Validator(schema).iter_errors(obj), key=lambda e: list(e.path)
            )
            checked += 1
            if errors:
                failed += 1
                for error in errors:
                    where = ".".join(str(p) for p in error.path) or "<root>"
                    print(f"FAIL {path}: {name}: {where}: {error.message}")
            else:
                print(f"PASS {path}: {name} ({obj['apiVersion']})")
    print(f"{checked} object(s) checked, {failed} failed")
    return 1 if failed or not checked else 0


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2:]))
