//! Requests whose object is not the resource's own kind, sent to webhooks and policies as
//! upstream sends them: `CONNECT` of `pods/exec`, `pods/attach` and `pods/portforward` with the
//! options object (`PodExecOptions`, `PodAttachOptions`, `PodPortForwardOptions`, decoded from
//! the query as upstream's `ConnectRequest`), and `CREATE` of `pods/binding` (a `Binding`) and
//! `pods/eviction` (a `policy/v1` `Eviction`) (`k8s.io/apiserver/pkg/endpoints/handlers/rest.go`
//! `ConnectResource`, `create.go` for the named creaters).

use serde_json::{Map, Value, json};

use super::dispatch::{Request, View};
use crate::auth::UserInfo;
use crate::error::ApiResult;
use crate::registry::Resource;
use crate::rest::Api;

/// Shows the options object or subresource body as it is (`kind` its group, version, kind).
struct AsIs((String, String, String));

impl View for AsIs {
    fn kind(&self, _res: &Resource) -> (String, String, String) {
        self.0.clone()
    }

    fn view(&self, _res: &Resource, stored: &Value) -> ApiResult<Value> {
        Ok(stored.clone())
    }

    fn unview(&self, _res: &Resource, target: &mut Value, view: Value) -> ApiResult<()> {
        *target = view;
        Ok(())
    }
}

/// The options object of a CONNECT request of `sub` from its query (`None`: not a CONNECT
/// subresource), as upstream decodes it (`PodExecOptions` and `PodAttachOptions` omit false
/// booleans and an empty container).
#[must_use]
pub fn options(sub: &str, query: &[(String, String)]) -> Option<Value> {
    let kind = match sub {
        "exec" => "PodExecOptions",
        "attach" => "PodAttachOptions",
        "portforward" => "PodPortForwardOptions",
        _ => return None,
    };
    let mut m = Map::new();
    m.insert("kind".into(), json!(kind));
    m.insert("apiVersion".into(), json!("v1"));
    fn all<'q>(query: &'q [(String, String)], k: &'q str) -> impl Iterator<Item = &'q str> {
        query.iter().filter(move |(q, _)| q == k).map(|(_, v)| v.as_str())
    }
    if sub == "portforward" {
        let ports: Vec<i64> = all(query, "ports")
            .flat_map(|v| v.split(','))
            .filter_map(|p| p.trim().parse().ok())
            .collect();
        if !ports.is_empty() {
            m.insert("ports".into(), json!(ports));
        }
        return Some(Value::Object(m));
    }
    for b in ["stdin", "stdout", "stderr", "tty"] {
        if all(query, b).next().is_some_and(|v| matches!(v, "true" | "1" | "True")) {
            m.insert(b.into(), json!(true));
        }
    }
    if let Some(c) = all(query, "container").next().filter(|c| !c.is_empty()) {
        m.insert("container".into(), json!(c));
    }
    if sub == "exec" {
        let command: Vec<&str> = all(query, "command").collect();
        if !command.is_empty() {
            m.insert("command".into(), json!(command));
        }
    }
    Some(Value::Object(m))
}

/// Runs mutating webhooks, policies and validating webhooks on a request of `res`'s
/// subresource `sub` whose object is `obj` (of `kind`); mutating webhooks may change `obj`.
/// Returns the warnings.
///
/// # Errors
/// A refusal or a failed call of a `Fail` webhook, as for any write.
#[allow(clippy::too_many_arguments)]
pub async fn admit(
    api: &Api,
    res: &Resource,
    sub: &str,
    operation: &'static str,
    ns: &str,
    name: &str,
    user: &UserInfo,
    kind: (&str, &str, &str),
    obj: &mut Value,
    dry_run: bool,
) -> ApiResult<Vec<String>> {
    let kind = (kind.0.to_owned(), kind.1.to_owned(), kind.2.to_owned());
    // Upstream passes no operation options with CONNECT; creates carry CreateOptions.
    let options = if operation == "CONNECT" {
        Value::Null
    } else {
        let mut o = json!({"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"});
        if dry_run {
            o["dryRun"] = json!(["All"]);
        }
        o
    };
    let req = Request {
        res,
        sub,
        operation,
        namespace: if res.namespaced { ns } else { "" },
        name,
        user,
        dry_run,
        options,
        authorizer: api.authz.get().cloned(),
        request_kind: Some(kind.clone()),
    };
    let view = AsIs(kind);
    let (mut warnings, _) =
        super::mutate(&api.store, &api.registry, &req, &view, Some(obj), None).await?;
    warnings.extend(super::policy::validate(
        &api.store,
        &api.registry,
        &req,
        &view,
        Some(obj),
        None,
    )?);
    warnings
        .extend(super::validate(&api.store, &api.registry, &req, &view, Some(obj), None).await?);
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_options_are_decoded_from_the_query_as_upstream() {
        let q = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
        };
        let exec = options(
            "exec",
            &q(&[
                ("command", "ls"),
                ("command", "-l"),
                ("stdout", "true"),
                ("stdin", "false"),
                ("container", "c"),
            ]),
        );
        assert_eq!(
            exec,
            Some(json!({"kind": "PodExecOptions", "apiVersion": "v1", "stdout": true,
                        "container": "c", "command": ["ls", "-l"]}))
        );
        let attach = options("attach", &q(&[("tty", "true")]));
        assert_eq!(
            attach,
            Some(json!({"kind": "PodAttachOptions", "apiVersion": "v1", "tty": true}))
        );
        let pf = options("portforward", &q(&[("ports", "80,443"), ("ports", "8080")]));
        assert_eq!(
            pf,
            Some(
                json!({"kind": "PodPortForwardOptions", "apiVersion": "v1", "ports": [80, 443, 8080]})
            )
        );
        assert_eq!(options("log", &[]), None);
    }
}
