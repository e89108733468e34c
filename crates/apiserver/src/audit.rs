//! The audit log (`kinetic up --audit-log FILE`, kube-apiserver's `--audit-log-path`): one JSON
//! line per request, an `audit.k8s.io/v1` `Event` at level `Metadata`, as upstream's log backend
//! writes them with a policy of `level: Metadata` for everything.
//!
//! # Caveats
//! One event per request, at the stage the response is sent: `ResponseComplete`, or
//! `ResponseStarted` for long-running requests (watches, streamed logs), where upstream also
//! writes a second, `ResponseComplete`, event when they end. Writes are synchronous and
//! unbuffered (upstream's `blocking` mode): each line is in the file when the response goes out.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::{Value, json};

use crate::metrics::RequestLabels;

/// The open audit log file.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<std::fs::File>,
}

/// What an audit event says about one request.
pub struct Record<'a> {
    pub labels: &'a RequestLabels,
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
    pub request_uri: &'a str,
    pub user_agent: Option<&'a str>,
    pub peer: Option<SocketAddr>,
    pub authenticated: bool,
    pub code: u16,
    pub received: jiff::Timestamp,
    pub long_running: bool,
}

/// Upstream's audit timestamps: RFC 3339 in UTC with microseconds.
fn micros(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

impl AuditLog {
    /// Opens (or creates) the log for appending.
    ///
    /// # Errors
    /// The file cannot be opened.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self { path: path.to_owned(), file: Mutex::new(file) })
    }

    /// The event of one request.
    pub fn event(r: &Record<'_>) -> Value {
        let l = r.labels;
        // The lowercase verbs of upstream's RequestInfo (audit events use those, not the
        // metrics' uppercase ones).
        let verb = match l.verb {
            "LIST" => "list",
            "WATCH" => "watch",
            "GET" => "get",
            "POST" if !l.resource.is_empty() => "create",
            "PUT" if !l.resource.is_empty() => "update",
            "PATCH" => "patch",
            "DELETE" if l.scope == "resource" => "delete",
            "DELETE" if !l.resource.is_empty() => "deletecollection",
            "CONNECT" => match l.subresource.as_str() {
                "log" => "get",
                _ => "create",
            },
            other => return Self::non_resource(r, &other.to_lowercase()),
        };
        let mut ev = Self::common(r, verb);
        let mut obj = json!({"resource": l.resource, "apiVersion": l.version});
        if !l.group.is_empty() {
            obj["apiGroup"] = json!(l.group);
        }
        if let Some(ns) = r.namespace {
            obj["namespace"] = json!(ns);
        }
        if let Some(n) = r.name {
            obj["name"] = json!(n);
        }
        if !l.subresource.is_empty() {
            obj["subresource"] = json!(l.subresource);
        }
        ev["objectRef"] = obj;
        ev
    }

    fn non_resource(r: &Record<'_>, verb: &str) -> Value {
        Self::common(r, verb)
    }

    fn common(r: &Record<'_>, verb: &str) -> Value {
        let user = if r.authenticated {
            // The one bearer token's user, as the kubeconfig names it.
            json!({"username": "kinetic-admin", "groups": ["system:masters", "system:authenticated"]})
        } else {
            json!({"username": "system:anonymous", "groups": ["system:unauthenticated"]})
        };
        let mut ev = json!({
            "kind": "Event",
            "apiVersion": "audit.k8s.io/v1",
            "level": "Metadata",
            "auditID": uuid::Uuid::new_v4().to_string(),
            "stage": if r.long_running && r.code < 300 { "ResponseStarted" } else { "ResponseComplete" },
            "requestURI": r.request_uri,
            "verb": verb,
            "user": user,
            "sourceIPs": r.peer.iter().map(|p| p.ip().to_string()).collect::<Vec<_>>(),
            "responseStatus": {"metadata": {}, "code": r.code},
            "requestReceivedTimestamp": micros(r.received),
            "stageTimestamp": micros(jiff::Timestamp::now()),
        });
        if let Some(ua) = r.user_agent {
            ev["userAgent"] = json!(ua);
        }
        ev
    }

    /// Appends one event as one line.
    pub fn write(&self, ev: &Value) {
        let mut line = serde_json::to_vec(ev).unwrap_or_default();
        line.push(b'\n');
        let mut f = self.file.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(e) = f.write_all(&line) {
            tracing::warn!(path = %self.path.display(), error = %e, "writing the audit log failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_create_is_a_metadata_event_with_its_object_ref() {
        let labels = RequestLabels {
            verb: "POST",
            group: "apps".into(),
            version: "v1".into(),
            resource: "deployments".into(),
            scope: "namespace",
            ..Default::default()
        };
        let r = Record {
            labels: &labels,
            namespace: Some("default"),
            name: None,
            request_uri: "/apis/apps/v1/namespaces/default/deployments",
            user_agent: Some("kubectl/v1.35.0"),
            peer: Some("127.0.0.1:5000".parse().unwrap()),
            authenticated: true,
            code: 201,
            received: jiff::Timestamp::now(),
            long_running: false,
        };
        let ev = AuditLog::event(&r);
        assert_eq!(ev["apiVersion"], "audit.k8s.io/v1");
        assert_eq!(
            (ev["level"].as_str(), ev["stage"].as_str()),
            (Some("Metadata"), Some("ResponseComplete"))
        );
        assert_eq!(ev["verb"], "create");
        assert_eq!(
            ev["objectRef"],
            json!({"resource": "deployments", "apiGroup": "apps", "apiVersion": "v1", "namespace": "default"})
        );
        assert_eq!(ev["responseStatus"]["code"], 201);
        assert_eq!(ev["sourceIPs"], json!(["127.0.0.1"]));
        assert!(ev["requestReceivedTimestamp"].as_str().unwrap().ends_with('Z'));
    }
}
