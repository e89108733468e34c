#!/usr/bin/env python3
"""Generate crates/machinery/src/protobuf/table.rs, the message table behind
`kinetic_machinery::protobuf::decode`, and probe kubectl for the facts the table needs.

Sources of truth (read from the local cargo registry; nothing here is a build dependency):

- k8s-pb 0.9.0 (prost code generated from the upstream generated.proto files of Kubernetes
  1.35): message names, field numbers, wire kinds (`#[prost(string, optional, tag = "1")]`),
  repeated/map labels and message references.
- k8s-openapi 0.29.0, module v1_35 (generated from the upstream OpenAPI document): the JSON
  name of every field (its `"podIPs" => Field::Key_pod_ips` arms), the (apiVersion, kind) of
  every top-level kind (`impl Resource`) and its list kind (`impl ListableResource`). prost
  snake_cases the proto field names (`podIPs` -> `pod_ips`), so the two are joined on the
  lowercased name without underscores.
- scripts/protobuf-zero-fields.txt, written by `probe` below: which scalar fields JSON prints
  when they hold their zero value. The Go types write every non-pointer field to protobuf,
  zero or not, but their JSON `omitempty` drops zeros unless the field is a pointer
  (`replicas *int32`) or has no `omitempty` (`containerPort int32 json:"containerPort"`).
  Neither fact is in the .proto files, so the probe asks the real thing: it answers kubectl's
  `create ... -o json` with a protobuf object whose every scalar holds its zero value, and
  records which keys kubectl prints back. Fields it cannot reach (kinds kubectl cannot create,
  fields newer than kubectl) fall back to: numbers and bools print their zero (harmless: Go
  reads a zero exactly as an absent field), strings and bytes do not, except those listed in
  PRINT_EMPTY_STRINGS below from the Go types.

A message field whose name the OpenAPI definition lacks is a Go struct embedded with
`json:",inline"` (Volume.volumeSource); the table marks it to be flattened into its parent.

Usage (kubectl is any recent one on PATH; the probe ran with v1.32):
    scripts/gen-protobuf-table.py table     # write crates/machinery/src/protobuf/table.rs
    scripts/gen-protobuf-table.py probe     # rewrite scripts/protobuf-zero-fields.txt; then `table`
    scripts/gen-protobuf-table.py fixtures  # rewrite crates/machinery/src/protobuf/fixtures/
    scripts/gen-protobuf-table.py dump      # print the joined schema as JSON, for a look
"""

import glob
import http.server
import json
import os
import re
import subprocess
import sys
import tempfile
import threading

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "crates/machinery/src/protobuf/table.rs")
FIXTURES = os.path.join(ROOT, "crates/machinery/src/protobuf/fixtures")
ZERO_FIELDS = os.path.join(ROOT, "scripts/protobuf-zero-fields.txt")
K8S_PB = "k8s-pb-0.9.0"
K8S_OPENAPI = "k8s-openapi-0.29.0"
K8S_OPENAPI_MODULE = "v1_35"
KUBERNETES = "1.35"


def registry_dir(name):
    home = os.environ.get("CARGO_HOME", os.path.expanduser("~/.cargo"))
    hits = glob.glob(os.path.join(home, "registry/src/*", name))
    if not hits:
        sys.exit(
            f"{name} is not in the cargo registry; fetch it with a throwaway crate, e.g.\n"
            f"  cargo new /tmp/fetch && cd /tmp/fetch && cargo add {name.rsplit('-', 1)[0]}@="
            f"{name.rsplit('-', 1)[1]} && cargo fetch"
        )
    return hits[0]


# Messages whose JSON form is not the generic object of their fields (their Go types have
# custom MarshalJSON methods), keyed by proto name; the value names the Rust `Special`.
SPECIAL = {
    "k8s.io.apimachinery.pkg.apis.meta.v1.Time": "Time",
    "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime": "MicroTime",
    "k8s.io.apimachinery.pkg.apis.meta.v1.Duration": "Duration",
    "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1": "RawJson",
    "k8s.io.apimachinery.pkg.api.resource.Quantity": "Quantity",
    "k8s.io.apimachinery.pkg.api.resource.QuantityValue": "Quantity",
    "k8s.io.apimachinery.pkg.util.intstr.IntOrString": "IntOrString",
    "k8s.io.apimachinery.pkg.apis.meta.v1.Verbs": "StringList",
    "k8s.io.api.authentication.v1.ExtraValue": "StringList",
    "k8s.io.api.authentication.v1beta1.ExtraValue": "StringList",
    "k8s.io.api.authorization.v1.ExtraValue": "StringList",
    "k8s.io.api.authorization.v1beta1.ExtraValue": "StringList",
    "k8s.io.api.certificates.v1.ExtraValue": "StringList",
    "k8s.io.api.certificates.v1beta1.ExtraValue": "StringList",
    "k8s.io.apimachinery.pkg.runtime.RawExtension": "RawExtension",
    "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.JSON": "RawJson",
    "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1beta1.JSON": "RawJson",
    "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrArray": "SchemaOrArray",
    "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1beta1.JSONSchemaPropsOrArray": "SchemaOrArray",
    "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrBool": "SchemaOrBool",
    "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1beta1.JSONSchemaPropsOrBool": "SchemaOrBool",
    "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrStringArray": "SchemaOrStringArray",
    "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1beta1.JSONSchemaPropsOrStringArray": "SchemaOrStringArray",
}
# Packages left out: test fixtures of apimachinery itself.
SKIP_PACKAGES = ("k8s.io.apimachinery.pkg.apis.testapigroup.",)
# Kinds every group version registers (metav1.AddToGroupVersion); DeleteOptions is the one a
# client sends as a request body (client-go `Delete` with protobuf).
OPTION_KINDS = ["DeleteOptions"]

PROST_ATTR = re.compile(r"#\[prost\((.*)\)\]")


def parse_k8s_pb():
    """Returns {proto name: {"fields": [...], "rust": rust struct name}}."""
    src = os.path.join(registry_dir(K8S_PB), "src")
    messages = {}
    for path in sorted(glob.glob(os.path.join(src, "**/mod.rs"), recursive=True)):
        module = os.path.relpath(os.path.dirname(path), src).split(os.sep)
        package = "k8s.io." + ".".join(module)
        if package.startswith(SKIP_PACKAGES):
            continue
        lines = open(path, encoding="utf-8").read().split("\n")
        i = 0
        current = None
        while i < len(lines):
            line = lines[i]
            m = re.match(r"^pub struct (\w+) \{(\})?$", line)
            if m:
                current = {"rust": m.group(1), "fields": []}
                messages[package + "." + m.group(1)] = current
                if m.group(2):
                    current = None
                i += 1
                continue
            if line == "}":
                current = None
            m = PROST_ATTR.match(line.strip())
            if m and current is not None:
                attr = m.group(1)
                # The field declaration may span lines; read it up to its closing comma.
                decl = ""
                i += 1
                while True:
                    decl += lines[i].strip() + " "
                    if decl.rstrip().endswith(",") and decl.count("<") == decl.count(">"):
                        break
                    i += 1
                current["fields"].append(parse_field(attr, decl, module, package))
            i += 1
    return messages


def resolve(path_text, module):
    """Turns a Rust type path relative to `module` into a proto name."""
    parts = path_text.replace(" ", "").split("::")
    base = list(module)
    while parts and parts[0] == "super":
        parts.pop(0)
        base.pop()
    if parts and parts[0] == "crate":
        parts.pop(0)
        base = []
    return "k8s.io." + ".".join(base + parts)


def parse_field(attr, decl, module, package):
    m = re.match(r"pub (?:r#)?(\w+): (.*),\s*$", decl.strip() + " ")
    if not m:
        raise SystemExit(f"cannot parse field declaration: {decl!r}")
    rust_name, ty = m.group(1), m.group(2)
    tag = int(re.search(r'tag = "(\d+)"', attr).group(1))
    kind = attr.split(",")[0].strip()
    field = {"rust": rust_name, "number": tag}
    if kind.startswith("btree_map") or kind.startswith("map"):
        value = re.search(r'map = "string, (\w+)"', attr).group(1)
        field["label"] = "map"
        if value == "message":
            inner = re.search(r"BTreeMap<\s*::prost::alloc::string::String,\s*(.*?),?\s*>\s*$", ty).group(1)
            field["type"] = "message"
            field["message"] = resolve(inner.strip(), module)
        else:
            field["type"] = value
        return field
    field["label"] = "repeated" if "repeated" in attr else "optional"
    if kind.startswith("bytes"):
        kind = "bytes"
    field["type"] = kind
    if kind == "message":
        inner = ty.strip()
        for wrapper in ("::core::option::Option<", "::prost::alloc::vec::Vec<", "::prost::alloc::boxed::Box<"):
            if inner.startswith(wrapper):
                inner = inner[len(wrapper):-1].strip().rstrip(",").strip()
        field["message"] = resolve(inner, module)
    elif kind not in ("string", "bytes", "int32", "int64", "bool", "double"):
        raise SystemExit(f"unexpected prost kind {kind!r} in {package}")
    return field


def parse_k8s_openapi():
    """Returns ({definition (lowercased): {normalized field: json name}}, [(apiVersion, kind,
    definition)], {normalized field: {json names}}).

    Names come from every Kubernetes version module of the crate, the pinned one first, so that
    definitions it no longer has (older group versions) still find theirs; kinds come from the
    pinned module only. The last map holds every spelling seen for a name, for messages no
    module defines (admission reviews, lists)."""
    base = os.path.join(registry_dir(K8S_OPENAPI), "src")
    modules = [K8S_OPENAPI_MODULE] + sorted(
        (m for m in os.listdir(base) if re.match(r"v\d+_\d+$", m) and m != K8S_OPENAPI_MODULE), reverse=True)
    names = {}
    kinds = []
    spellings = {}
    for module in modules:
        n, k = parse_k8s_openapi_module(os.path.join(base, module))
        for definition, fields in n.items():
            for normalized, json_name in fields.items():
                names.setdefault(definition, {}).setdefault(normalized, json_name)
                spellings.setdefault(normalized, set()).add(json_name)
        if module == K8S_OPENAPI_MODULE:
            kinds = k
    return names, kinds, spellings


def parse_k8s_openapi_module(src):
    names = {}
    kinds = []
    for path in sorted(glob.glob(os.path.join(src, "**/*.rs"), recursive=True)):
        text = open(path, encoding="utf-8").read()
        m = re.match(r"// Generated from definition (\S+)", text)
        if not m:
            continue
        definition = m.group(1)
        fields = {}
        for json_name, _key in re.findall(r'^\s*"([^"]+)" => Field::Key_(\w+),$', text, re.M):
            fields[normalize(json_name)] = json_name
        names[definition_key(definition)] = fields
        api_version = re.search(r'const API_VERSION: &\'static str = "([^"]+)";', text)
        kind = re.search(r'const KIND: &\'static str = "([^"]+)";', text)
        if api_version and kind:
            kinds.append((api_version.group(1), kind.group(1), definition))
            list_kind = re.search(r'const LIST_KIND: &\'static str = "([^"]+)";', text)
            if list_kind:
                kinds.append((api_version.group(1), list_kind.group(1), definition.rsplit(".", 1)[0] + "." + list_kind.group(1)))
    return names, kinds


def definition_key(definition):
    """OpenAPI spells io.k8s.apiextensions-apiserver where the proto package has an underscore."""
    return definition.lower().replace("-", "_")


def normalize(name):
    # "$ref" and "x-kubernetes-list-type" meet prost's "ref" and "x_kubernetes_list_type".
    return re.sub(r"[^a-z0-9]", "", name.lower())


# JSON names that neither the OpenAPI document nor camelCasing gives (types the document lacks).
OVERRIDES = {
    "insecureSkipTlsVerifyBackend": "insecureSkipTLSVerifyBackend",
    "desiredApiVersion": "desiredAPIVersion",
    "jSonSchemas": "JSONSchemas",
}


def camel(snake):
    head, *rest = snake.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


# String fields the probe cannot reach whose empty value JSON keeps: a Go pointer
# (`holderIdentity *string`) or a tag without omitempty (`NodeAddress.Type json:"type"`),
# read from the Go types of k8s.io/api v0.35 for the kinds a Go client sends with protobuf
# (kubelet, scheduler, controllers, leader election). Numbers and bools need no entry: the
# fallback prints their zero, which decodes in Go exactly as an absent field does.
PRINT_EMPTY_STRINGS = [
    *(f"apps.v1.{k}Condition.{f}" for k in ("ReplicaSet", "DaemonSet", "StatefulSet") for f in ("type", "status")),
    *(f"core.v1.{k}Condition.{f}" for k in ("Node", "PersistentVolumeClaim", "ReplicationController", "Component") for f in ("type", "status")),
    "coordination.v1.LeaseSpec.holderIdentity", "coordination.v1.LeaseSpec.strategy",
    "coordination.v1.LeaseSpec.preferredHolder",
    "discovery.v1.EndpointSlice.addressType", "discovery.v1.Endpoint.hostname",
    "discovery.v1.Endpoint.nodeName", "discovery.v1.Endpoint.zone",
    "discovery.v1.EndpointPort.name", "discovery.v1.EndpointPort.protocol",
    "discovery.v1.EndpointPort.appProtocol", "discovery.v1.ForZone.name", "discovery.v1.ForNode.name",
    "core.v1.EndpointAddress.ip", "core.v1.EndpointAddress.nodeName", "core.v1.EndpointPort.appProtocol",
    "core.v1.Event.reportingComponent", "core.v1.Event.reportingInstance",
    "core.v1.NodeAddress.type", "core.v1.NodeAddress.address",
    *(f"core.v1.NodeSystemInfo.{f}" for f in ("machineID", "systemUUID", "bootID", "kernelVersion", "osImage",
                                               "containerRuntimeVersion", "kubeletVersion", "kubeProxyVersion",
                                               "operatingSystem", "architecture")),
    "core.v1.AttachedVolume.name", "core.v1.AttachedVolume.devicePath", "core.v1.NodeRuntimeHandler.name",
    "core.v1.ConfigMapNodeConfigSource.namespace", "core.v1.ConfigMapNodeConfigSource.name",
    "core.v1.ConfigMapNodeConfigSource.kubeletConfigKey", "core.v1.Taint.key", "core.v1.Taint.effect",
    "meta.v1.DeleteOptions.propagationPolicy",
]


def load_zero_fields():
    """{(message, json field): bool} from the probe; missing means not probed."""
    result = {tuple(name.rsplit(".", 1)): True for name in PRINT_EMPTY_STRINGS}
    if os.path.exists(ZERO_FIELDS):
        for line in open(ZERO_FIELDS, encoding="utf-8"):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            verdict, name = line.split(" ", 1)
            message, field = name.rsplit(".", 1)
            if verdict != "unknown":
                result[(message, field)] = verdict == "print"
    return result


def build_schema():
    pb = parse_k8s_pb()
    openapi_names, openapi_kinds, spellings = parse_k8s_openapi()
    by_lower = {name.lower(): name for name in pb}
    schema = {"messages": {}, "kinds": [], "guessed": []}
    # Proto message names keep their proto spelling (PodIP, not prost's PodIp): take it from
    # the OpenAPI definition of the same name where there is one.
    proto_name = {}
    definition_case = {}
    for path in glob.glob(os.path.join(registry_dir(K8S_OPENAPI), "src", K8S_OPENAPI_MODULE, "**/*.rs"), recursive=True):
        with open(path, encoding="utf-8") as f:
            m = re.match(r"// Generated from definition (\S+)", f.readline())
        if m:
            definition_case[definition_key(m.group(1))] = m.group(1).replace("-", "_")
    for name in pb:
        definition = "io.k8s." + name[len("k8s.io."):]
        spelled = definition_case.get(definition_key(definition))
        proto_name[name] = ("k8s.io." + spelled[len("io.k8s."):]) if spelled else name
    zero = load_zero_fields()
    for name, message in sorted(pb.items(), key=lambda kv: proto_name[kv[0]]):
        definition = definition_key("io.k8s." + name[len("k8s.io."):])
        json_names = openapi_names.get(definition, {})
        fields = []
        pname = proto_name[name]
        for f in message["fields"]:
            json_name = json_names.get(normalize(f["rust"]))
            inline = False
            if json_name is None and definition in openapi_names and f["type"] == "message":
                # A Go struct embedded with `json:",inline"` (Volume's VolumeSource, Probe's
                # ProbeHandler): a field in protobuf, its fields flattened into the parent in JSON.
                json_name, inline = camel(f["rust"]), True
            elif json_name is None:
                seen = spellings.get(normalize(f["rust"]), set())
                json_name = OVERRIDES.get(camel(f["rust"]))
                if json_name is None:
                    json_name = next(iter(seen)) if len(seen) == 1 else camel(f["rust"])
                if len(seen) != 1 and SPECIAL.get(pname) is None:
                    schema["guessed"].append(f"{short(pname)}.{json_name}")
            out = dict(f, json=json_name, inline=inline)
            if "message" in f:
                target = by_lower.get(f["message"].lower(), f["message"])
                if target not in pb:
                    raise SystemExit(f"{pname}.{json_name} refers to unknown message {f['message']}")
                out["message"] = proto_name[target]
            if f["type"] != "message" and f["label"] == "optional":
                probed = zero.get((short(pname), json_name))
                out["zero"] = probed if probed is not None else f["type"] in ("int32", "int64", "bool", "double")
                out["probed"] = probed is not None
            fields.append(out)
        fields.sort(key=lambda f: f["number"])
        schema["messages"][pname] = {"fields": fields, "special": SPECIAL.get(pname)}
    for api_version, kind, definition in openapi_kinds:
        pname = "k8s.io." + definition[len("io.k8s."):].replace("-", "_")
        pname = {n.lower(): n for n in schema["messages"]}.get(pname.lower())
        if pname is not None:
            schema["kinds"].append((api_version, kind, pname))
    api_versions = sorted({k[0] for k in schema["kinds"]} | {"meta.k8s.io/v1"})
    for api_version in api_versions:
        for kind in OPTION_KINDS:
            schema["kinds"].append((api_version, kind, "k8s.io.apimachinery.pkg.apis.meta.v1." + kind))
    schema["kinds"] = sorted(set(schema["kinds"]))
    # Keep what the kinds reach; the rest (group versions Kubernetes no longer serves, review
    # and option types no client sends) would only grow the table.
    reachable = set()
    todo = [k[2] for k in schema["kinds"]]
    while todo:
        pname = todo.pop()
        if pname in reachable:
            continue
        reachable.add(pname)
        todo.extend(f["message"] for f in schema["messages"][pname]["fields"] if "message" in f)
    schema["messages"] = {n: m for n, m in schema["messages"].items() if n in reachable}
    schema["guessed"] = [g for g in schema["guessed"] if g.rsplit(".", 1)[0] in {short(n) for n in reachable}]
    return schema


def short(pname):
    """k8s.io.api.core.v1.Pod -> core.v1.Pod (as in error messages and the probe file)."""
    for prefix in ("k8s.io.apimachinery.pkg.apis.", "k8s.io.apimachinery.pkg.", "k8s.io.api.",
                   "k8s.io.apiextensions_apiserver.pkg.apis.", "k8s.io.kube_aggregator.pkg.apis.",
                   "k8s.io.metrics.pkg.apis.", "k8s.io."):
        if pname.startswith(prefix):
            return pname[len(prefix):]
    return pname


def ident(pname):
    name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", short(pname))
    return re.sub(r"[^A-Za-z0-9]", "_", name).upper()


RUST_TYPE = {"string": "String", "bytes": "Bytes", "int32": "Int32", "int64": "Int64",
             "bool": "Bool", "double": "Double"}


def write_table(schema):
    out = []
    w = out.append
    w("// @generated by scripts/gen-protobuf-table.py; do not edit by hand.")
    w("//")
    w(f"// Field numbers and kinds: the k8s-pb crate ({K8S_PB}, prost code for the generated.proto")
    w(f"// files of Kubernetes {KUBERNETES}). JSON names and (apiVersion, kind): {K8S_OPENAPI}, module")
    w(f"// {K8S_OPENAPI_MODULE}. Which zero scalars JSON prints: scripts/protobuf-zero-fields.txt")
    w("// (probed from kubectl; see the script).")
    w("")
    w("use super::{Field, Message, Special, Ty};")
    w("")
    for pname, message in schema["messages"].items():
        special = message["special"] or "None"
        w(f"pub(super) static {ident(pname)}: Message = Message {{")
        w(f"    name: {json.dumps(short(pname))},")
        w(f"    special: Special::{special},")
        if not message["fields"]:
            w("    fields: &[],")
        else:
            w("    fields: &[")
            for f in message["fields"]:
                if f["type"] == "message":
                    ty = f"Ty::Message(&{ident(f['message'])})"
                else:
                    ty = f"Ty::{RUST_TYPE[f['type']]}"
                head = f"{f['number']}, {json.dumps(f['json'])}, {ty}"
                if f["inline"]:
                    w(f"        Field::inline({head}),")
                elif f["label"] == "optional" and f["type"] != "message":
                    w(f"        Field::scalar({head}, {'true' if f['zero'] else 'false'}),")
                else:
                    w(f"        Field::{'message' if f['label'] == 'optional' else f['label']}({head}),")
            w("    ],")
        w("};")
    w("")
    w("/// Every (apiVersion, kind) the decoder knows, sorted, with its message.")
    w("pub(super) static KINDS: &[(&str, &str, &Message)] = &[")
    for api_version, kind, pname in schema["kinds"]:
        w(f"    ({json.dumps(api_version)}, {json.dumps(kind)}, &{ident(pname)}),")
    w("];")
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")
    subprocess.run(["rustfmt", "--edition", "2024", "--config", "max_width=100,use_small_heuristics=Max", OUT], check=True)
    n_fields = sum(len(m["fields"]) for m in schema["messages"].values())
    print(f"wrote {OUT}: {len(schema['messages'])} messages, {n_fields} fields, {len(schema['kinds'])} kinds", file=sys.stderr)
    if schema["guessed"]:
        print(f"{len(schema['guessed'])} field names not in {K8S_OPENAPI} (camelCased from prost):", file=sys.stderr)
        for g in schema["guessed"]:
            print("  " + g, file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# A minimal protobuf encoder for the probe and the fixtures.

def varint(n):
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def key(number, wire):
    return varint(number << 3 | wire)


def ld(number, payload):
    return key(number, 2) + varint(len(payload)) + payload


def envelope(api_version, kind, raw):
    type_meta = ld(1, api_version.encode()) + ld(2, kind.encode())
    return b"k8s\x00" + ld(1, type_meta) + ld(2, raw) + ld(3, b"") + ld(4, b"")


def sample_message(schema, pname, zero, skip=frozenset(), stack=()):
    """Encodes a message with every field present: scalars zero (or a fixed non-zero value),
    one element per repeated field and map. Recursion stops at a message already on the
    stack (JSONSchemaProps). Fields named in `skip` ("core.v1.PodSpec.workloadRef") are left
    out."""
    message = schema["messages"][pname]
    special = message["special"]
    if special in ("Time", "MicroTime"):
        return b"" if zero else key(1, 0) + varint(1767323045) + key(2, 0) + varint(123456789)
    if special == "Duration":
        return key(1, 0) + varint(0 if zero else 90_500_000_000)
    if special == "Quantity":
        return ld(1, b"1" if zero else b"250m")
    if special == "IntOrString":
        return key(1, 0) + varint(0) + key(2, 0) + varint(0 if zero else 8080) + ld(3, b"")
    if special in ("RawExtension", "RawJson"):
        return ld(1, b'{"a":1}')
    if special is not None:
        return b""
    out = b""
    for f in message["fields"]:
        n = f["number"]
        if f"{short(pname)}.{f['json']}" in skip:
            continue
        if f["type"] == "message":
            if f["message"] in stack:
                continue
            inner = sample_message(schema, f["message"], zero, skip, stack + (pname,))
            if f["label"] == "map":
                out += ld(n, ld(1, b"k") + ld(2, inner))
            else:
                out += ld(n, inner)
            continue
        value = scalar(f["type"], zero)
        if f["label"] == "map":
            out += ld(n, ld(1, b"k") + value(2))
        else:
            out += value(n)
    return out


def scalar(ty, zero):
    if ty == "string":
        return lambda n: ld(n, b"" if zero else b"s")
    if ty == "bytes":
        return lambda n: ld(n, b"" if zero else b"\x00\xffhi")
    if ty in ("int32", "int64"):
        return lambda n: key(n, 0) + varint(0 if zero else -7)
    if ty == "bool":
        return lambda n: key(n, 0) + varint(0 if zero else 1)
    if ty == "double":
        return lambda n: key(n, 1) + (b"\x00" * 8 if zero else bytes.fromhex("000000000000f83f"))
    raise ValueError(ty)


# ---------------------------------------------------------------------------------------------
# A plain-HTTP stand-in for the API server that records what kubectl sends and answers a
# create with a canned body.

# Just enough discovery for `kubectl run` to map "pods".
DISCOVERY = {
    "/api": {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []},
    "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": []},
    "/api/v1": {"kind": "APIResourceList", "groupVersion": "v1", "resources": [
        {"name": "pods", "singularName": "pod", "namespaced": True, "kind": "Pod",
         "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}]},
}


class Recorder:
    def __init__(self):
        self.requests = []
        self.reply = None  # (content type, bytes) for the next POST
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def handle_any(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                recorder.requests.append((self.command, self.path, self.headers.get("Content-Type"), body))
                if self.command == "POST" and recorder.reply is not None:
                    ctype, out = recorder.reply
                    self.send_response(201)
                elif self.command == "POST":
                    ctype, out = "application/json", b"{}"
                    self.send_response(201)
                elif self.path.split("?")[0] in DISCOVERY:
                    ctype, out = "application/json", json.dumps(DISCOVERY[self.path.split("?")[0]]).encode()
                    self.send_response(200)
                else:
                    ctype = "application/json"
                    out = b'{"kind":"Status","apiVersion":"v1","status":"Failure","code":404,"reason":"NotFound"}'
                    self.send_response(404)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = handle_any

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.dir = tempfile.mkdtemp()
        self.kubeconfig = os.path.join(self.dir, "kubeconfig")
        with open(self.kubeconfig, "w") as f:
            f.write(
                "apiVersion: v1\nkind: Config\n"
                f"clusters: [{{name: c, cluster: {{server: 'http://127.0.0.1:{self.server.server_port}'}}}}]\n"
                "users: [{name: u, user: {token: t}}]\n"
                "contexts: [{name: x, context: {cluster: c, user: u, namespace: default}}]\n"
                "current-context: x\n"
            )

    def kubectl(self, args, flags=()):
        # Flags go before a "--", after which kubectl takes the container's command.
        split = args.index("--") if "--" in args else len(args)
        args = [*args[:split], *flags, *args[split:]]
        env = dict(os.environ, KUBECONFIG=self.kubeconfig)
        return subprocess.run(["kubectl", *args], env=env, capture_output=True, text=True, timeout=60)


# kubectl commands that create a typed object with protobuf and print what the server answers,
# so answering them with a probe object makes kubectl decode it (Go) and print its JSON.
PROBES = [
    ("apps/v1", "Deployment", "k8s.io.api.apps.v1.Deployment", ["create", "deployment", "web", "--image=nginx"]),
    ("v1", "Pod", "k8s.io.api.core.v1.Pod", ["run", "pod", "--image=nginx", "--restart=Never"]),
    ("v1", "Service", "k8s.io.api.core.v1.Service", ["create", "service", "clusterip", "svc", "--tcp=80:8080"]),
    ("v1", "Namespace", "k8s.io.api.core.v1.Namespace", ["create", "namespace", "ns"]),
    ("v1", "ConfigMap", "k8s.io.api.core.v1.ConfigMap", ["create", "configmap", "cm"]),
    ("v1", "Secret", "k8s.io.api.core.v1.Secret", ["create", "secret", "generic", "sec"]),
    ("v1", "ServiceAccount", "k8s.io.api.core.v1.ServiceAccount", ["create", "serviceaccount", "sa"]),
    ("v1", "ResourceQuota", "k8s.io.api.core.v1.ResourceQuota", ["create", "quota", "q"]),
    ("batch/v1", "Job", "k8s.io.api.batch.v1.Job", ["create", "job", "j", "--image=busybox"]),
    ("batch/v1", "CronJob", "k8s.io.api.batch.v1.CronJob", ["create", "cronjob", "cj", "--image=busybox", "--schedule=* * * * *"]),
    ("policy/v1", "PodDisruptionBudget", "k8s.io.api.policy.v1.PodDisruptionBudget", ["create", "pdb", "p", "--selector=a=b", "--min-available=1"]),
    ("networking.k8s.io/v1", "Ingress", "k8s.io.api.networking.v1.Ingress", ["create", "ingress", "i", "--rule=a.com/=svc:80"]),
    ("rbac.authorization.k8s.io/v1", "Role", "k8s.io.api.rbac.v1.Role", ["create", "role", "r", "--verb=get", "--resource=pods"]),
    ("rbac.authorization.k8s.io/v1", "RoleBinding", "k8s.io.api.rbac.v1.RoleBinding", ["create", "rolebinding", "rb", "--role=r", "--user=u"]),
    ("rbac.authorization.k8s.io/v1", "ClusterRole", "k8s.io.api.rbac.v1.ClusterRole", ["create", "clusterrole", "cr", "--verb=get", "--resource=pods"]),
    ("scheduling.k8s.io/v1", "PriorityClass", "k8s.io.api.scheduling.v1.PriorityClass", ["create", "priorityclass", "pc", "--value=1"]),
]


def validate(args):
    # `kubectl run` has no --validate; the others would fetch /openapi/v3 to validate first.
    return [] if args[0] == "run" else ["--validate=false"]


def run_probe(schema, recorder, probe, zero, skip=frozenset()):
    api_version, kind, pname, args = probe
    body = envelope(api_version, kind, sample_message(schema, pname, zero, skip))
    recorder.reply = ("application/vnd.kubernetes.protobuf", body)
    # kubectl leaves managedFields out of -o json unless asked.
    result = recorder.kubectl(args, [*validate(args), "--show-managed-fields", "-o", "json"])
    if result.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)} failed: {result.stderr}")
    return pname, body, json.loads(result.stdout)


def walk(schema, pname, value, visit, stack=()):
    """Calls visit(message, field, printed object) for every field of `pname` in what kubectl
    printed for a probe object, following one element of each repeated field and map."""
    message = schema["messages"][pname]
    if message["special"] is not None or not isinstance(value, dict):
        return
    for f in message["fields"]:
        visit(short(pname), f, value)
        if f["type"] == "message" and f["message"] not in stack:
            inner = value if f["inline"] else value.get(f["json"])
            if f["label"] == "repeated" and isinstance(inner, list) and inner:
                inner = inner[0]
            elif f["label"] == "map" and isinstance(inner, dict):
                inner = inner.get("k")
            walk(schema, f["message"], inner, visit, stack + (pname,))


def unknown_to_kubectl(schema, recorder):
    """Fields that kubectl drops even when they hold a non-zero value: newer than kubectl."""
    unknown = set()

    def visit(message, f, value):
        if not f["inline"] and f["json"] not in value:
            unknown.add(f"{message}.{f['json']}")

    for p in PROBES:
        _, _, printed = run_probe(schema, recorder, p, zero=False)
        walk(schema, p[2], printed, visit)
    return unknown


def probe(schema):
    recorder = Recorder()
    unknown = unknown_to_kubectl(schema, recorder)
    verdicts = {}

    def visit(message, f, value):
        name = f"{message}.{f['json']}"
        if f["type"] != "message" and f["label"] == "optional" and name not in unknown:
            verdicts[name] = f["json"] in value

    for p in PROBES:
        _, _, printed = run_probe(schema, recorder, p, zero=True)
        walk(schema, p[2], printed, visit)
    version = subprocess.run(["kubectl", "version", "--client"], capture_output=True, text=True).stdout.split("\n")[0]
    lines = [
        "# Written by scripts/gen-protobuf-table.py probe from kubectl's JSON for protobuf objects whose",
        "# every scalar holds its zero value. `print` = JSON keeps the zero (a Go pointer, or no",
        "# omitempty); `omit` = JSON drops it; `unknown` = newer than this kubectl, which drops it",
        "# whatever its value (the table falls back as for fields not listed, which the probe did",
        f"# not reach). {version}",
    ]
    for name, printed in sorted(verdicts.items()):
        lines.append(f"{'print' if printed else 'omit'} {name}")
    for name in sorted(unknown):
        lines.append(f"unknown {name}")
    with open(ZERO_FIELDS, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {ZERO_FIELDS}: {len(verdicts)} fields, {sum(verdicts.values())} print their zero", file=sys.stderr)


# Commands whose request bodies become fixtures, with the --dry-run=client JSON to compare to.
CAPTURES = [
    ("create-configmap", ["create", "configmap", "x", "--from-literal=a=b", "--from-literal=empty="]),
    ("create-namespace", ["create", "namespace", "team-a"]),
    ("create-deployment", ["create", "deployment", "web", "--image=nginx", "--replicas=3", "--port=80"]),
    ("create-secret-generic", ["create", "secret", "generic", "s", "--from-literal=password=hunter2", "--from-literal=bin=\x01\xff"]),
    ("create-service-nodeport", ["create", "service", "nodeport", "np", "--tcp=80:8080"]),
    ("create-job", ["create", "job", "j", "--image=busybox", "--", "echo", "hi"]),
    ("create-serviceaccount", ["create", "serviceaccount", "builder"]),
    ("create-cronjob", ["create", "cronjob", "nightly", "--image=busybox", "--schedule=0 3 * * *", "--", "date"]),
    # (`kubectl run` sends JSON, so it has no fixture.)
]


def fixtures(schema):
    os.makedirs(FIXTURES, exist_ok=True)
    recorder = Recorder()
    for name, args in CAPTURES:
        recorder.requests.clear()
        recorder.reply = ("application/json", b"{}")
        result = recorder.kubectl(args, validate(args))
        posts = [r for r in recorder.requests if r[0] == "POST"]
        if result.returncode != 0 or len(posts) != 1:
            raise SystemExit(f"kubectl {' '.join(args)}: {result.stderr} {posts}")
        _, path, ctype, body = posts[0]
        if ctype != "application/vnd.kubernetes.protobuf":
            raise SystemExit(f"kubectl {' '.join(args)} sent {ctype}, not protobuf")
        dry = recorder.kubectl(args, [*validate(args), "--dry-run=client", "-o", "json"])
        if dry.returncode != 0:
            raise SystemExit(dry.stderr)
        write_fixture(name, body, json.loads(dry.stdout))
    # kubectl decoding protobuf answers: every field present, once with zero values and once
    # with non-zero ones; kubectl's JSON of what it decoded is the expected output.
    # Fields newer than kubectl are left out: it would drop them.
    unknown = {line.split()[1] for line in open(ZERO_FIELDS, encoding="utf-8") if line.startswith("unknown ")}
    for p in PROBES[:3]:
        for zero in (True, False):
            _, body, printed = run_probe(schema, recorder, p, zero, unknown)
            write_fixture(f"kubectl-decodes-{p[1].lower()}-{'zero' if zero else 'full'}", body, printed)


def write_fixture(name, body, expected):
    with open(os.path.join(FIXTURES, name + ".pb"), "wb") as f:
        f.write(body)
    with open(os.path.join(FIXTURES, name + ".json"), "w", encoding="utf-8") as f:
        f.write(json.dumps(expected, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote fixture {name} ({len(body)} bytes)", file=sys.stderr)


def main():
    command = sys.argv[1] if len(sys.argv) > 1 else "table"
    schema = build_schema()
    if command == "table":
        write_table(schema)
    elif command == "probe":
        probe(schema)
    elif command == "fixtures":
        fixtures(schema)
    elif command == "dump":
        json.dump(schema, sys.stdout, indent=1)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
