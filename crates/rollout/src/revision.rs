//! ControllerRevision data, hash and name, as upstream's `revision/cloneset_revision.go` builds
//! them with Kubernetes' `history.NewControllerRevision` / `HashControllerRevision`
//! (`pkg/controller/history/controller_history.go`).
//!
//! The hash is FNV-1 32 (Go's `fnv.New32`, not FNV-1a) over the revision data, followed by the
//! decimal collision count when there is one, rendered as its decimal string mapped through
//! `rand.SafeEncodeString`. The data is serialised as Go's `json.Marshal` of a generic map would
//! (object keys sorted, compact, `<`, `>`, `&`, U+2028 and U+2029 escaped), so equal templates
//! always hash equal. It is not byte-for-byte upstream's data, because upstream marshals the
//! *defaulted Go struct* (with `creationTimestamp: null`, `resources: {}` and the pod defaults
//! its webhook added); revision names therefore differ from OpenKruise's for the same manifest.

use serde_json::{Value, json};

use crate::scale::ALPHANUMS;

/// The revision data of a pod template: `{"spec":{"template":{...,"$patch":"replace"}}}`, a
/// strategic merge patch that restores the template (upstream's `getPatch` with
/// `SetRevisionTemplate`).
pub fn revision_data(template: &Value) -> Value {
    let mut template = template.clone();
    if let Some(t) = template.as_object_mut() {
        t.insert("$patch".to_owned(), json!("replace"));
    }
    json!({ "spec": { "template": template } })
}

/// FNV-1, 32 bits (Go's `hash/fnv.New32`).
pub fn fnv1_32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |h, &b| h.wrapping_mul(0x0100_0193) ^ u32::from(b))
}

/// Kubernetes' `rand.SafeEncodeString`: each byte of `s` mapped to
/// `ALPHANUMS[byte % 27]`.
pub fn safe_encode(s: &str) -> String {
    s.bytes().map(|b| char::from(ALPHANUMS[usize::from(b) % ALPHANUMS.len()])).collect()
}

/// The hash of revision `data` with `collision_count` (`HashControllerRevision`).
pub fn revision_hash(data: &Value, collision_count: Option<i32>) -> String {
    let mut bytes = go_json(data).into_bytes();
    if let Some(n) = collision_count {
        bytes.extend_from_slice(n.to_string().as_bytes());
    }
    safe_encode(&fnv1_32(&bytes).to_string())
}

/// `{parent}-{hash}`, the parent name cut to 223 bytes (`ControllerRevisionName`).
pub fn revision_name(parent: &str, hash: &str) -> String {
    let mut cut = parent.len().min(223);
    while !parent.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}-{hash}", &parent[..cut])
}

/// The name of the revision of `template` for the CloneSet `parent` (its data, hash and name in
/// one step).
pub fn revision_name_for(parent: &str, template: &Value, collision_count: Option<i32>) -> String {
    revision_name(parent, &revision_hash(&revision_data(template), collision_count))
}

/// Compact JSON with sorted object keys and Go's HTML-safe string escaping, as Go's
/// `json.Marshal` writes a `map[string]interface{}`.
pub fn go_json(v: &Value) -> String {
    let mut out = String::new();
    write_go_json(v, &mut out);
    out
}

fn write_go_json(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_go_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_go_json(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_go_string(k, out);
                out.push(':');
                write_go_json(&map[k], out);
            }
            out.push('}');
        }
    }
}

fn write_go_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}
