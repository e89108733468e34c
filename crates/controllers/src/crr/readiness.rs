//! The `KruisePodReady` readiness gate shared by several holders, as upstream's
//! `pkg/util/podreadiness`: the condition's message is a JSON list of
//! `{"userAgent": .., "key": ..}` entries, one per holder; the condition is False while the list
//! is not empty and True once the last holder removed its entry. Only pods that carry the gate
//! in `spec.readinessGates` are touched.

use k8s_openapi::api::core::v1::Pod;
use kinetic_api::kruise::KRUISE_POD_READY_CONDITION;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt as _};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// One holder of the gate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub user_agent: String,
    pub key: String,
}

/// Whether the pod has the `KruisePodReady` readiness gate.
pub fn has_gate(pod: &Pod) -> bool {
    pod.spec
        .iter()
        .flat_map(|s| s.readiness_gates.iter().flatten())
        .any(|g| g.condition_type == KRUISE_POD_READY_CONDITION)
}

/// The holders in a condition message (an unparsable message holds nothing, as upstream).
pub fn holders(message: Option<&str>) -> Vec<Message> {
    message.filter(|m| !m.is_empty()).and_then(|m| serde_json::from_str(m).ok()).unwrap_or_default()
}

/// The condition after `who` is added (`add`) or removed; `None` when nothing changes.
pub fn next_condition(
    current: Option<(&str, Option<&str>)>,
    who: &Message,
    add: bool,
    now: &str,
) -> Option<serde_json::Value> {
    let (status, message) = current.unwrap_or(("", None));
    let mut list = holders(message);
    let had = list.contains(who);
    if add {
        if had && status == "False" {
            return None;
        }
        if !had {
            list.push(who.clone());
        }
    } else {
        if !had {
            return None;
        }
        list.retain(|m| m != who);
    }
    let status = if list.is_empty() { "True" } else { "False" };
    // Upstream's field order (`userAgent`, then `key`), as its readers print it.
    let message = if list.is_empty() {
        String::new()
    } else {
        serde_json::to_string(&list).unwrap_or_default()
    };
    Some(json!({"type": KRUISE_POD_READY_CONDITION, "status": status, "message": message,
                "lastTransitionTime": now}))
}

async fn change(client: &Client, pod: &Pod, who: &Message, add: bool) -> Result<(), kube::Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    for attempt in 0.. {
        let Some(cur) = api.get_opt(&pod.name_any()).await? else { return Ok(()) };
        if cur.uid() != pod.uid() || !has_gate(&cur) {
            return Ok(());
        }
        let cond = cur
            .status
            .iter()
            .flat_map(|s| s.conditions.iter().flatten())
            .find(|c| c.type_ == KRUISE_POD_READY_CONDITION);
        let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        let Some(next) =
            next_condition(cond.map(|c| (c.status.as_str(), c.message.as_deref())), who, add, &now)
        else {
            return Ok(());
        };
        let body = json!({"metadata": {"uid": cur.uid(), "resourceVersion": cur.resource_version()},
                          "status": {"conditions": [next]}});
        match api
            .patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Strategic(body))
            .await
        {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 && attempt < 5 => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Adds `user_agent`/`key` as a holder: the condition goes False.
///
/// # Errors
/// The pod cannot be read or written (a conflict is retried 5 times).
pub async fn add_not_ready(
    client: &Client,
    pod: &Pod,
    user_agent: &str,
    key: &str,
) -> Result<(), kube::Error> {
    let who = Message { user_agent: user_agent.to_owned(), key: key.to_owned() };
    change(client, pod, &who, true).await
}

/// Removes the holder; the condition goes True when it was the last.
///
/// # Errors
/// As [`add_not_ready`].
pub async fn remove_not_ready(
    client: &Client,
    pod: &Pod,
    user_agent: &str,
    key: &str,
) -> Result<(), kube::Error> {
    let who = Message { user_agent: user_agent.to_owned(), key: key.to_owned() };
    change(client, pod, &who, false).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holders_share_the_gate() {
        let a = Message { user_agent: "ContainerRecreateRequest".into(), key: "d/a".into() };
        let b = Message { user_agent: "ContainerRecreateRequest".into(), key: "d/b".into() };
        let t = "2026-01-01T00:00:00Z";
        let first = next_condition(Some(("True", None)), &a, true, t).expect("changes");
        assert_eq!(first["status"], "False");
        assert_eq!(first["message"], r#"[{"userAgent":"ContainerRecreateRequest","key":"d/a"}]"#);
        let msg = first["message"].as_str().map(str::to_owned);
        assert_eq!(next_condition(Some(("False", msg.as_deref())), &a, true, t), None);
        let both = next_condition(Some(("False", msg.as_deref())), &b, true, t).expect("changes");
        let both_msg = both["message"].as_str().map(str::to_owned);
        let after_a =
            next_condition(Some(("False", both_msg.as_deref())), &a, false, t).expect("changes");
        assert_eq!(after_a["status"], "False", "b still holds it");
        let after_a_msg = after_a["message"].as_str().map(str::to_owned);
        let after_b =
            next_condition(Some(("False", after_a_msg.as_deref())), &b, false, t).expect("changes");
        assert_eq!(after_b["status"], "True");
        assert_eq!(next_condition(Some(("True", None)), &a, false, t), None);
    }
}
