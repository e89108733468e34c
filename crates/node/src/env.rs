//! Container environment as kubelet builds it: `envFrom` first, then `env` in order, each
//! value with `$(VAR)` references to earlier variables and the service variables
//! ([`crate::svcenv`]) expanded, then the service variables the container does not set itself;
//! the same expansion applies to `command` and `args`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};

use crate::refs::Refs;

/// Why a container's configuration cannot be built (kubelet: `CreateContainerConfigError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The environment of `c` in `pod`, as ordered `NAME=value` pairs; `services` are the service
/// variables (kubelet's `makeEnvironmentVariables`: they come last and never replace a variable
/// the container sets).
///
/// # Errors
/// A referenced ConfigMap, Secret or key is missing and not optional, or a fieldRef names a
/// field that is not supported.
pub fn build(
    pod: &Pod,
    c: &Container,
    pod_ip: &str,
    host_ip: &str,
    refs: &Refs,
    services: &BTreeMap<String, String>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out: Vec<(String, String)> = Vec::new();
    let set = |out: &mut Vec<(String, String)>, k: String, v: String| {
        if let Some(slot) = out.iter_mut().find(|(n, _)| *n == k) {
            slot.1 = v;
        } else {
            out.push((k, v));
        }
    };
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            let optional = r.optional.unwrap_or(false);
            match refs.config_map(&r.name) {
                Some(data) => {
                    for (k, v) in data {
                        set(
                            &mut out,
                            format!("{prefix}{k}"),
                            String::from_utf8_lossy(v).into_owned(),
                        );
                    }
                }
                None if optional => {}
                None => return Err(ConfigError(format!("configmap \"{}\" not found", r.name))),
            }
        }
        if let Some(r) = &from.secret_ref {
            let optional = r.optional.unwrap_or(false);
            match refs.secret(&r.name) {
                Some(data) => {
                    for (k, v) in data {
                        set(
                            &mut out,
                            format!("{prefix}{k}"),
                            String::from_utf8_lossy(v).into_owned(),
                        );
                    }
                }
                None if optional => {}
                None => return Err(ConfigError(format!("secret \"{}\" not found", r.name))),
            }
        }
    }
    for e in c.env.iter().flatten() {
        let value = if let Some(v) = &e.value {
            // Kubelet's mapping looks in the container's variables first, then the services'.
            let mut known: BTreeMap<&str, &str> =
                services.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            known.extend(out.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            expand(v, &known)
        } else if let Some(src) = &e.value_from {
            if let Some(f) = &src.field_ref {
                field(pod, &f.field_path, pod_ip, host_ip)?
            } else if let Some(r) = &src.resource_field_ref {
                resource_field(c, &r.resource, r.divisor.as_ref().map(|q| q.0.as_str()))?
            } else if let Some(r) = &src.config_map_key_ref {
                let optional = r.optional.unwrap_or(false);
                match refs.config_map(&r.name).map(|d| d.get(&r.key)) {
                    Some(Some(v)) => String::from_utf8_lossy(v).into_owned(),
                    _ if optional => continue,
                    None => return Err(ConfigError(format!("configmap \"{}\" not found", r.name))),
                    Some(None) => {
                        return Err(ConfigError(format!(
                            "couldn't find key {} in ConfigMap {}/{}",
                            r.key,
                            pod.metadata.namespace.as_deref().unwrap_or_default(),
                            r.name
                        )));
                    }
                }
            } else if let Some(r) = &src.secret_key_ref {
                let optional = r.optional.unwrap_or(false);
                match refs.secret(&r.name).map(|d| d.get(&r.key)) {
                    Some(Some(v)) => String::from_utf8_lossy(v).into_owned(),
                    _ if optional => continue,
                    None => return Err(ConfigError(format!("secret \"{}\" not found", r.name))),
                    Some(None) => {
                        return Err(ConfigError(format!(
                            "couldn't find key {} in Secret {}/{}",
                            r.key,
                            pod.metadata.namespace.as_deref().unwrap_or_default(),
                            r.name
                        )));
                    }
                }
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        set(&mut out, e.name.clone(), value);
    }
    for (k, v) in services {
        if !out.iter().any(|(n, _)| n == k) {
            out.push((k.clone(), v.clone()));
        }
    }
    Ok(out)
}

/// The env values of `c` read from the pod's labels and annotations through `fieldRef`
/// (`metadata.labels['k']`, `metadata.annotations['k']`), by variable name.
///
/// Kubelet resolves these once, when it creates the container; OpenKruise's
/// `InPlaceUpdateEnvFromMetadata` has kruise-daemon recreate the container when they change.
/// The worker compares this with what the running container was started with and restarts it
/// in place on a difference.
pub fn from_metadata(pod: &Pod, c: &Container) -> BTreeMap<String, String> {
    c.env
        .iter()
        .flatten()
        .filter_map(|e| {
            let path = &e.value_from.as_ref()?.field_ref.as_ref()?.field_path;
            let from_meta =
                path.starts_with("metadata.labels[") || path.starts_with("metadata.annotations[");
            let value = field(pod, path, "", "").ok().filter(|_| from_meta)?;
            Some((e.name.clone(), value))
        })
        .collect()
}

/// The value of a downward-API field path (env `fieldRef` and downwardAPI volume items).
///
/// # Errors
/// The path is not one kubelet supports.
pub fn field(pod: &Pod, path: &str, pod_ip: &str, host_ip: &str) -> Result<String, ConfigError> {
    let m = &pod.metadata;
    let spec = pod.spec.as_ref();
    let subscript = |p: &str, prefix: &str| -> Option<String> {
        p.strip_prefix(prefix)?.strip_suffix("']").map(str::to_owned)
    };
    Ok(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(m.labels.as_ref()),
        "metadata.annotations" => format_map(m.annotations.as_ref()),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => {
            spec.and_then(|s| s.service_account_name.clone()).unwrap_or_default()
        }
        "status.podIP" | "status.podIPs" => pod_ip.to_owned(),
        "status.hostIP" | "status.hostIPs" => host_ip.to_owned(),
        p => {
            if let Some(k) = subscript(p, "metadata.labels['") {
                m.labels.as_ref().and_then(|l| l.get(&k)).cloned().unwrap_or_default()
            } else if let Some(k) = subscript(p, "metadata.annotations['") {
                m.annotations.as_ref().and_then(|l| l.get(&k)).cloned().unwrap_or_default()
            } else {
                return Err(ConfigError(format!("unsupported fieldPath: {p}")));
            }
        }
    })
}

fn format_map(m: Option<&BTreeMap<String, String>>) -> String {
    m.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", serde_json::Value::String(v.clone())))
        .collect::<Vec<_>>()
        .join("\n")
}

fn resource_field(
    c: &Container,
    resource: &str,
    divisor: Option<&str>,
) -> Result<String, ConfigError> {
    let res = c.resources.as_ref();
    let (map, name) = match resource.split_once('.') {
        Some(("limits", n)) => (res.and_then(|r| r.limits.as_ref()), n),
        Some(("requests", n)) => (res.and_then(|r| r.requests.as_ref()), n),
        _ => return Err(ConfigError(format!("unsupported resource: {resource}"))),
    };
    let q = map.and_then(|m| m.get(name)).map(|q| q.0.clone());
    let bad = |s: &str| ConfigError(format!("invalid quantity {s:?} for {resource}"));
    if name == "cpu" {
        // Without a limit kubelet reports the node's allocatable; we report the core count.
        let milli = match q {
            Some(q) => kinetic_machinery::quantity::milli(&q).map_err(|_| bad(&q))?,
            None => {
                i64::try_from(std::thread::available_parallelism().map_or(1, |n| n.get()))
                    .unwrap_or(1)
                    * 1000
            }
        };
        let div = kinetic_machinery::quantity::milli(divisor.unwrap_or("1"))
            .map_err(|_| bad("divisor"))?
            .max(1);
        Ok(((milli + div - 1) / div).to_string())
    } else {
        let v = match q {
            Some(q) => kinetic_machinery::quantity::value(&q).map_err(|_| bad(&q))?,
            None => 0,
        };
        let div = kinetic_machinery::quantity::value(divisor.unwrap_or("1"))
            .map_err(|_| bad("divisor"))?
            .max(1);
        Ok(((v + div - 1) / div).to_string())
    }
}

/// Expands `$(NAME)` from `vars`; `$$` is an escaped `$`; unknown references stay as written
/// (kubelet's `expansion.Expand`).
pub fn expand(s: &str, vars: &BTreeMap<&str, &str>) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            match b[i + 1] {
                b'$' => {
                    out.push('$');
                    i += 2;
                    continue;
                }
                b'(' => {
                    if let Some(end) = s[i + 2..].find(')') {
                        let name = &s[i + 2..i + 2 + end];
                        match vars.get(name) {
                            Some(v) => out.push_str(v),
                            None => out.push_str(&s[i..i + 3 + end]),
                        }
                        i += 3 + end;
                        continue;
                    }
                }
                _ => {}
            }
        }
        let ch = s[i..].chars().next().unwrap_or('\u{fffd}');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn expands_like_kubelet() {
        let vars = BTreeMap::from([("A", "1"), ("B", "two")]);
        assert_eq!(expand("$(A)-$(B)", &vars), "1-two");
        assert_eq!(expand("$$(A) $(C) $", &vars), "$(A) $(C) $");
        assert_eq!(expand("$(A", &vars), "$(A");
        assert_eq!(expand("é$(A)é", &vars), "é1é");
    }

    /// Service variables come after the container's, never replace one, and may be referenced.
    #[test]
    fn service_variables_come_last_and_never_override_the_containers() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"containers": [{"name": "c", "env": [
                {"name": "KUBERNETES_SERVICE_PORT", "value": "1"},
                {"name": "API", "value": "https://$(KUBERNETES_SERVICE_HOST):$(KUBERNETES_SERVICE_PORT)"},
            ]}]}}))
        .unwrap();
        let c = pod.spec.as_ref().unwrap().containers[0].clone();
        let services = BTreeMap::from([
            ("KUBERNETES_SERVICE_HOST".to_owned(), "10.0.0.1".to_owned()),
            ("KUBERNETES_SERVICE_PORT".to_owned(), "443".to_owned()),
        ]);
        let env = build(&pod, &c, "", "", &Refs::default(), &services).unwrap();
        assert_eq!(
            env,
            [
                ("KUBERNETES_SERVICE_PORT".to_owned(), "1".to_owned()),
                ("API".to_owned(), "https://10.0.0.1:1".to_owned()),
                ("KUBERNETES_SERVICE_HOST".to_owned(), "10.0.0.1".to_owned()),
            ]
        );
    }
}
