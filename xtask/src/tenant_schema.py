"""Rendered-manifest checks for `cargo xtask helm` (run with kubernetes-validate's virtualenv).

split FILE            write builtin-NAME (Kubernetes kinds) and tenants-NAME (Tenant objects)
                      beside FILE; every object must carry the standard app.kubernetes.io labels
valid CRD FILE...     every Tenant in FILEs must pass the CRD's openAPIV3Schema (strictly:
                      unknown fields are errors, as kubernetes-validate --strict does)
invalid CRD FILE...   every Tenant in FILEs must fail it
envcheck VIGIL FILE   every Deployment's VIGIL_* environment must be a configuration `vigil`
                      accepts (`vigil config check` with that environment; values that come
                      from Secrets get placeholders)
"""

import copy
import os
import subprocess
import sys
import tempfile

import jsonschema
import yaml

LABELS = [
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
]


def documents(path):
    with open(path, encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc]


def split(path):
    docs = documents(path)
    builtin, tenants, problems = [], [], []
    for doc in docs:
        kind = doc.get("kind")
        name = doc.get("metadata", {}).get("name")
        if not kind or not doc.get("apiVersion"):
            problems.append(f"an object without apiVersion/kind: {doc!r:.80}")
            continue
        if kind != "CustomResourceDefinition":
            labels = doc.get("metadata", {}).get("labels") or {}
            missing = [label for label in LABELS if label not in labels]
            if missing:
                problems.append(f"{kind}/{name} lacks labels {', '.join(missing)}")
        (tenants if kind == "Tenant" else builtin).append(doc)
    if problems:
        sys.exit(f"{path}:\n  " + "\n  ".join(problems))
    directory, name = os.path.split(path)
    for prefix, items in (("builtin-", builtin), ("tenants-", tenants)):
        if items:
            with open(os.path.join(directory, prefix + name), "w", encoding="utf-8") as out:
                yaml.safe_dump_all(items, out)
    kinds = sorted({doc["kind"] for doc in docs})
    print(f"{len(docs)} objects ({', '.join(kinds)}): labels present")


def strict(schema):
    """Unknown fields become errors, except under metadata (the API server's own schema)."""
    schema = copy.deepcopy(schema)

    def walk(node, path):
        if not isinstance(node, dict):
            return
        if node.get("type") == "object" and "properties" in node and path != ("metadata",):
            node.setdefault("additionalProperties", False)
        for key, child in node.get("properties", {}).items():
            walk(child, path + (key,))
        if isinstance(node.get("items"), dict):
            walk(node["items"], path + ("[]",))
        for key in ("anyOf", "oneOf", "allOf"):
            for child in node.get(key, []):
                walk(child, path)

    walk(schema, ())
    return schema


def validator(crd_path):
    crd = documents(crd_path)[0]
    version = crd["spec"]["versions"][0]
    root = copy.deepcopy(version["schema"]["openAPIV3Schema"])
    # Every object has these; the API server's own schema covers them.
    root.setdefault("properties", {}).update(
        {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"}}
    )
    schema = strict(root)
    api_version = f"{crd['spec']['group']}/{version['name']}"
    return api_version, jsonschema.Draft7Validator(schema)


def tenants(paths):
    for path in paths:
        for doc in documents(path):
            if doc.get("kind") == "Tenant":
                yield path, doc


def check(mode, crd_path, paths):
    api_version, schema = validator(crd_path)
    failures, count = [], 0
    for path, doc in tenants(paths):
        count += 1
        name = doc.get("metadata", {}).get("name")
        errors = [f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in schema.iter_errors(doc)]
        if doc.get("apiVersion") != api_version:
            errors.append(f"apiVersion is {doc.get('apiVersion')!r}, not {api_version!r}")
        if mode == "valid" and errors:
            failures.append(f"{path}: Tenant {name}: " + "; ".join(errors))
        elif mode == "invalid":
            if errors:
                print(f"rejected as expected: {os.path.basename(path)}: {errors[0]}")
            else:
                failures.append(f"{path}: Tenant {name} passed the schema but should not")
    if count == 0:
        sys.exit(f"no Tenant objects in {', '.join(paths)}")
    if failures:
        sys.exit("\n".join(failures))
    if mode == "valid":
        print(f"{count} Tenant objects valid against {crd_path}")


# Placeholders for values a Deployment takes from Secrets.
SECRET_PLACEHOLDERS = {
    "VIGIL_STORE__URL": "postgres://vigil@127.0.0.1:5432/vigil",
    "VIGIL_BUS__INBOX_PREFIX": "_INBOX_placeholder",
}


def envcheck(vigil, path):
    checked = 0
    with tempfile.NamedTemporaryFile("w", suffix=".toml") as empty:
        for doc in documents(path):
            if doc.get("kind") != "Deployment":
                continue
            for container in doc["spec"]["template"]["spec"]["containers"]:
                env = {"PATH": os.environ.get("PATH", "")}
                for item in container.get("env", []):
                    name = item["name"]
                    if not name.startswith("VIGIL_"):
                        continue
                    env[name] = item.get("value", SECRET_PLACEHOLDERS.get(name, "placeholder"))
                result = subprocess.run(
                    [vigil, "config", "check", empty.name], env=env, capture_output=True, text=True
                )
                if result.returncode != 0:
                    sys.exit(
                        f"{path}: Deployment {doc['metadata']['name']} configures vigil wrongly: "
                        + (result.stderr or result.stdout).strip()
                    )
                checked += 1
    print(f"{checked} containers' VIGIL_* environment accepted by vigil config check")


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "split":
        split(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "envcheck":
        envcheck(sys.argv[2], sys.argv[3])
    elif len(sys.argv) >= 4 and sys.argv[1] in ("valid", "invalid"):
        check(sys.argv[1], sys.argv[2], sys.argv[3:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
