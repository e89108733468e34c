//! Validation of `apps.kruise.io` objects, as OpenKruise's validating webhook does it
//! (`pkg/webhook/cloneset/validating/validation.go`, and the UnitedDeployment, ImagePullJob and
//! ImageListPullJob webhooks), so a CloneSet that OpenKruise would refuse
//! is refused here too, with `Invalid` and field causes, before anything is stored.
//!
//! The embedded server runs this in place of the webhook; the CRD schema (served like any
//! CRD) has already checked types, applied defaults and pruned unknown fields. The rules that
//! need neither the stored object nor the pod template live in
//! [`kinetic_rollout::validation`], where the CloneSet controller applies them too: on a real
//! cluster `kinetic controller` serves no webhook, so it refuses to act on a CloneSet that
//! breaks them instead.
//!
//! New `podsToDelete` entries must name existing pods of this CloneSet, as upstream's webhook
//! checks with a read of each pod ([`validate_pods_to_delete`], given the store by the caller):
//! a name of a pod that does not exist was accepted and silently cleared (issue 18).

use serde_json::Value;

use crate::error::Cause;
use crate::validation::validate_pod_spec;

pub const GROUP: &str = "apps.kruise.io";

/// Validates a new (`old` = None) or updated object of kind `kind` in `apps.kruise.io`.
pub fn validate(kind: &str, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    match kind {
        "CloneSet" => validate_cloneset(obj, old),
        "StatefulSet" => validate_statefulset(obj, old),
        "DaemonSet" => validate_daemonset(obj, old),
        "ImagePullJob" => validate_image_pull_job(obj),
        "ImageListPullJob" => validate_image_list_pull_job(obj),
        "PodUnavailableBudget" => validate_pub(obj),
        "BroadcastJob" => validate_broadcast_job(obj),
        "SidecarSet" => validate_sidecarset(obj),
        "UnitedDeployment" => validate_united_deployment(obj, old),
        _ => Vec::new(),
    }
}

/// OpenKruise's PodUnavailableBudget webhook (`pkg/webhook/podunavailablebudget/validating`,
/// `validatePodUnavailableBudgetSpec`): exactly one of `selector` (not empty) and `targetRef`
/// (all three fields set), exactly one of `maxUnavailable` and `minAvailable`, each a
/// non-negative integer or a percentage up to 100%; upstream's messages.
fn validate_pub(obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    let get = |f: &str| spec.get(f).filter(|v| !v.is_null());
    let null = Value::Null;
    match (get("selector"), get("targetRef")) {
        (None, None) => causes.push(Cause::invalid(
            "spec.selector",
            &null,
            "no selector or targetRef defined in PodUnavailableBudget",
        )),
        (Some(sel), Some(_)) => causes.push(Cause::invalid(
            "spec.selector",
            sel,
            "selector and targetRef are mutually exclusive",
        )),
        (None, Some(t)) => {
            let empty = ["apiVersion", "name", "kind"]
                .iter()
                .any(|f| t.get(*f).and_then(Value::as_str).is_none_or(str::is_empty));
            if empty {
                causes.push(Cause::invalid(
                    "spec.TargetReference",
                    t,
                    "empty TargetReference is not valid for PodUnavailableBudget.",
                ));
            }
        }
        (Some(sel), None) => {
            if let Err(e) = kinetic_machinery::selector::LabelSelector::from_label_selector(sel) {
                causes.push(Cause::invalid("spec.selector", sel, &e.to_string()));
            }
            let n = |f: &str| {
                sel.get(f)
                    .and_then(|v| v.as_object().map(|m| m.len()).or(v.as_array().map(Vec::len)))
                    .unwrap_or(0)
            };
            if n("matchLabels") + n("matchExpressions") == 0 {
                causes.push(Cause::invalid(
                    "spec.selector",
                    sel,
                    "empty selector is not valid for PodUnavailableBudget.",
                ));
            }
        }
    }
    match (get("maxUnavailable"), get("minAvailable")) {
        (None, None) => causes.push(Cause::invalid(
            "spec.maxUnavailable",
            &null,
            "no maxUnavailable or minAvailable defined in PodUnavailableBudget",
        )),
        (Some(m), Some(_)) => causes.push(Cause::invalid(
            "spec.maxUnavailable",
            m,
            "maxUnavailable and minAvailable are mutually exclusive",
        )),
        (Some(m), None) => {
            crate::pdb::validate_int_or_percent(m, "spec.maxUnavailable", &mut causes)
        }
        (None, Some(m)) => crate::pdb::validate_int_or_percent(m, "spec.minAvailable", &mut causes),
    }
    causes
}

/// OpenKruise's UnitedDeployment webhook (`pkg/webhook/uniteddeployment/validating`): the
/// rules the controller applies too ([`kinetic_rollout::united::validation`]), the pod
/// template of the workload template, and on an update the subsets' node selector terms and
/// tolerations, which may not change.
fn validate_united_deployment(obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut causes = kinetic_rollout::united::validation::validate(obj);
    for kind in [
        "statefulSetTemplate",
        "advancedStatefulSetTemplate",
        "cloneSetTemplate",
        "deploymentTemplate",
    ] {
        let pointer = format!("/spec/template/{kind}/spec/template/spec");
        if obj.pointer(&format!("/spec/template/{kind}")).is_some_and(|t| !t.is_null()) {
            let path = format!("spec.template.{kind}.spec.template.spec");
            validate_pod_spec(obj.pointer(&pointer), &path, &mut causes);
        }
    }
    if let Some(old) = old {
        causes.extend(kinetic_rollout::united::validation::validate_update(old, obj));
    }
    causes
}

/// Defaults a new or updated object of kind `kind` in `apps.kruise.io` as OpenKruise's mutating
/// webhook does, beyond what the CRD schema's plain defaults already did: the Advanced
/// DaemonSet's `rollingUpdate` defaults depend on other fields (`SetDefaultsDaemonSet`), and
/// its pod template gets the core/v1 pod defaults (`SetDefaultPodSpec`), so a revision hash
/// does not change when the server fills them in on the pods. A BroadcastJob's template gets
/// the pod defaults too (`SetDefaultsBroadcastJob`; the schema defaults `parallelism`,
/// `completionPolicy.type` and `failurePolicy.type`).
pub fn default(kind: &str, obj: &mut Value) {
    if kind == "DaemonSet" {
        crate::daemonset::default(obj, true);
    } else if kind == "StatefulSet" {
        // The Advanced StatefulSet's `SetDefaultsStatefulSet` (rollingUpdate only for the
        // RollingUpdate type).
        kinetic_rollout::statefulset::validation::default(obj, true);
    }
    if matches!(kind, "DaemonSet" | "BroadcastJob")
        && let Some(ps) = obj.pointer_mut("/spec/template/spec").and_then(Value::as_object_mut)
    {
        crate::builtin::default_pod_spec(ps);
    }
}

/// OpenKruise's BroadcastJob webhook (`pkg/webhook/broadcastjob/validating`): a job pod
/// template (restartPolicy `Never` or `OnFailure`), a non-negative parallelism, and the
/// completion policy rules ImagePullJob has too.
fn validate_broadcast_job(obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    validate_pod_spec(spec.pointer("/template/spec"), "spec.template.spec", &mut causes);
    let rp = spec.pointer("/template/spec/restartPolicy").and_then(Value::as_str).unwrap_or("");
    if !matches!(rp, "Never" | "OnFailure") {
        causes.retain(|c| c.field != "spec.template.spec.restartPolicy");
        causes.push(Cause::invalid(
            "spec.template.spec.restartPolicy",
            &Value::String(rp.to_owned()),
            "pod restartPolicy can only be Never or OnFailure",
        ));
    }
    let bad_parallelism = match spec.get("parallelism") {
        Some(Value::Number(n)) => n.as_i64().is_none_or(|n| n < 0),
        Some(Value::String(s)) => {
            s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()).is_none_or(|p| p < 0)
        }
        _ => false,
    };
    if bad_parallelism {
        causes.push(Cause::invalid(
            "spec.parallelism",
            spec.get("parallelism").unwrap_or(&Value::Null),
            "parallelism must be a non-negative integer or percentage",
        ));
    }
    let policy = spec.get("completionPolicy").cloned().unwrap_or(Value::Null);
    validate_completion_type(&policy, &mut causes);
    causes
}

/// The Advanced StatefulSet webhook (`pkg/webhook/statefulset/validating`): the rules the
/// controller applies too, the pod template's own validation, an immutable selector, and only
/// the mutable spec fields changed on update.
fn validate_statefulset(obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    use kinetic_rollout::statefulset::validation;
    let mut causes = validation::validate(obj, true);
    validate_pod_spec(obj.pointer("/spec/template/spec"), "spec.template.spec", &mut causes);
    if let Some(old) = old {
        if let (Some(o), Some(n)) = (old.pointer("/spec/selector"), obj.pointer("/spec/selector"))
            && o != n
        {
            causes.push(crate::error::invalid(
                "spec.selector",
                &n.to_string(),
                "field is immutable",
            ));
        }
        causes.extend(validation::validate_update(old, obj, true));
    }
    causes
}

/// The Advanced DaemonSet webhook (`pkg/webhook/daemonset/validating`): the apps/v1 spec rules
/// with Kruise's `rollingUpdate` additions, and the pod template's own validation.
fn validate_daemonset(obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut causes = crate::daemonset::validate_spec(obj, old, true);
    validate_pod_spec(obj.pointer("/spec/template/spec"), "spec.template.spec", &mut causes);
    causes
}

/// OpenKruise's ImagePullJob webhook (`pkg/webhook/imagepulljob/validating`, `validate`, the
/// same for v1alpha1 and v1beta1), with its messages, as `Forbidden` field causes (the webhook
/// answers 400 with the bare message; a field cause says where). Issue 18: the manual's own
/// first example sets `names` and `matchLabels` together, which upstream refuses.
fn validate_image_pull_job(obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    validate_pull_targets(&spec, &mut causes);
    if spec.get("image").and_then(Value::as_str).is_none_or(str::is_empty) {
        causes.push(Cause::required("spec.image", "image can not be empty"));
    }
    let policy = spec.get("completionPolicy").cloned().unwrap_or(Value::Null);
    let deadline = policy.get("activeDeadlineSeconds").and_then(Value::as_i64);
    let timeout = spec.pointer("/pullPolicy/timeoutSeconds").and_then(Value::as_i64).unwrap_or(600);
    if policy.get("type").and_then(Value::as_str).unwrap_or("Always") == "Always"
        && deadline.is_some_and(|d| timeout > d)
    {
        causes.push(Cause::forbidden(
            "spec.completionPolicy.activeDeadlineSeconds",
            "completionPolicy.activeDeadlineSeconds must be greater than pullPolicy.timeoutSeconds(default 600)",
        ));
    }
    validate_completion_type(&policy, &mut causes);
    causes
}

/// The ImageListPullJob webhook (`pkg/webhook/imagelistpulljob/validating`): the target and
/// completion rules of ImagePullJob, and a list of at most 255 distinct images.
fn validate_image_list_pull_job(obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    validate_pull_targets(&spec, &mut causes);
    let images: Vec<&Value> =
        spec.get("images").and_then(Value::as_array).into_iter().flatten().collect();
    if images.is_empty() || images.iter().any(|i| i.as_str().is_none_or(str::is_empty)) {
        causes.push(Cause::required("spec.images", "image can not be empty"));
    }
    if images.iter().enumerate().any(|(i, image)| images[..i].contains(image)) {
        causes.push(Cause::forbidden("spec.images", "images cannot have duplicate values"));
    }
    if images.len() > 255 {
        causes.push(Cause::forbidden("spec.images", "the maximum number of images cannot > 255"));
    }
    let policy = spec.get("completionPolicy").cloned().unwrap_or(Value::Null);
    validate_completion_type(&policy, &mut causes);
    causes
}

/// `Never` takes neither a deadline nor a TTL; types other than `Always` and `Never` are
/// refused (upstream's messages).
fn validate_completion_type(policy: &Value, causes: &mut Vec<Cause>) {
    let set = |v: Option<&Value>| v.is_some_and(|v| !v.is_null());
    match policy.get("type").and_then(Value::as_str).unwrap_or("Always") {
        "Always" => {}
        "Never" => {
            if set(policy.get("activeDeadlineSeconds"))
                || set(policy.get("ttlSecondsAfterFinished"))
            {
                causes.push(Cause::forbidden(
                    "spec.completionPolicy",
                    "activeDeadlineSeconds and ttlSecondsAfterFinished can only work with Always CompletionPolicyType",
                ));
            }
        }
        other => causes.push(Cause::forbidden(
            "spec.completionPolicy.type",
            &format!("unknown type of completionPolicy: {other}"),
        )),
    }
}

/// The node and pod selector rules ImagePullJob and ImageListPullJob share.
fn validate_pull_targets(spec: &Value, causes: &mut Vec<Cause>) {
    let set = |v: Option<&Value>| v.is_some_and(|v| !v.is_null());
    let selector = spec.get("selector").filter(|s| !s.is_null());
    if let Some(sel) = selector {
        let labels = set(sel.get("matchLabels")) || set(sel.get("matchExpressions"));
        let names = sel.get("names").filter(|n| !n.is_null());
        if labels && names.is_some() {
            causes.push(Cause::forbidden(
                "spec.selector",
                "can not set both names and labelSelector in this spec.selector",
            ));
        }
        let list: Vec<&Value> = names.and_then(Value::as_array).into_iter().flatten().collect();
        if list.iter().enumerate().any(|(i, n)| list[..i].contains(n)) {
            causes
                .push(Cause::forbidden("spec.selector.names", "duplicated name in selector names"));
        }
    }
    if set(spec.get("podSelector")) && selector.is_some() {
        causes.push(Cause::forbidden(
            "spec.podSelector",
            "can not set both selector and podSelector",
        ));
    }
}

/// OpenKruise's SidecarSet webhook (`pkg/webhook/sidecarset/validating/sidecarset_validating.go`),
/// the rules that read only the object: a non-empty selector, `namespace` xor
/// `namespaceSelector`, containers and init containers valid as pod containers with unique
/// names, known injection, share and upgrade policies, a hot-upgrade empty image that differs
/// from the image, exclusive `transferEnv` sources and names, int-or-percent strategy values and
/// JSON for `MergePatchJson`. Not done: the check against other SidecarSets' container names.
fn validate_sidecarset(obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    let set = |v: Option<&Value>| v.is_some_and(|v| !v.is_null());
    match spec.get("selector").filter(|s| !s.is_null()) {
        None => causes.push(Cause::required("spec.selector", "no selector defined for SidecarSet")),
        Some(sel) => {
            let labels =
                sel.get("matchLabels").and_then(Value::as_object).is_some_and(|m| !m.is_empty());
            let exprs = sel
                .get("matchExpressions")
                .and_then(Value::as_array)
                .is_some_and(|m| !m.is_empty());
            if !labels && !exprs {
                causes.push(crate::error::invalid(
                    "spec.selector",
                    &sel.to_string(),
                    "empty selector is invalid for sidecarset",
                ));
            } else if kinetic_machinery::selector::LabelSelector::from_label_selector(sel).is_err()
            {
                causes.push(crate::error::invalid(
                    "spec.selector",
                    &sel.to_string(),
                    "invalid label selector",
                ));
            }
        }
    }
    if spec.get("namespace").and_then(Value::as_str).is_some_and(|n| !n.is_empty())
        && set(spec.get("namespaceSelector"))
    {
        causes.push(Cause::forbidden(
            "spec.namespace",
            "namespace and namespaceSelector are mutually exclusive",
        ));
    }
    // The containers as pod containers (names, images, unique names across both lists).
    let strip = |list: Option<&Value>| -> Value {
        let items = list.and_then(Value::as_array).cloned().unwrap_or_default();
        Value::Array(
            items
                .into_iter()
                .map(|mut c| {
                    if let Some(o) = c.as_object_mut() {
                        for f in SIDECAR_FIELDS {
                            o.remove(f);
                        }
                    }
                    c
                })
                .collect(),
        )
    };
    let pseudo = serde_json::json!({
        "containers": strip(spec.get("containers")),
        "initContainers": strip(spec.get("initContainers")),
    });
    let mut pod_causes = Vec::new();
    validate_pod_spec(Some(&pseudo), "spec", &mut pod_causes);
    // A SidecarSet may inject only init containers.
    causes.extend(pod_causes.into_iter().filter(|c| c.field != "spec.containers"));
    for (i, c) in spec.get("containers").and_then(Value::as_array).into_iter().flatten().enumerate()
    {
        let p = format!("spec.containers[{i}]");
        let enumed = |field: &str, allowed: &[&str], causes: &mut Vec<Cause>| {
            let v = field.split('.').try_fold(c, |v, k| v.get(k));
            if let Some(v) = v.and_then(Value::as_str).filter(|v| !allowed.contains(v)) {
                let list =
                    allowed.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(", ");
                causes.push(Cause {
                    reason: "FieldValueNotSupported".into(),
                    message: format!("Unsupported value: \"{v}\": supported values: {list}"),
                    field: format!("{p}.{field}"),
                });
            }
        };
        enumed("podInjectPolicy", &["BeforeAppContainer", "AfterAppContainer"], &mut causes);
        enumed("shareVolumePolicy.type", &["enabled", "disabled"], &mut causes);
        enumed("shareVolumeDevicePolicy.type", &["enabled", "disabled"], &mut causes);
        enumed("upgradeStrategy.upgradeType", &["ColdUpgrade", "HotUpgrade"], &mut causes);
        if let Some(policy) = c.get("resourcesPolicy").filter(|v| !v.is_null()) {
            validate_resources_policy(&p, c, policy, &mut causes);
        }
        if c.pointer("/upgradeStrategy/upgradeType").and_then(Value::as_str) == Some("HotUpgrade") {
            let empty = c.pointer("/upgradeStrategy/hotUpgradeEmptyImage").and_then(Value::as_str);
            match empty {
                None | Some("") => causes.push(Cause::required(
                    &format!("{p}.upgradeStrategy.hotUpgradeEmptyImage"),
                    "hotUpgradeEmptyImage must be set when upgradeType is HotUpgrade",
                )),
                Some(e) if Some(e) == c.get("image").and_then(Value::as_str) => {
                    causes.push(Cause::forbidden(
                        &format!("{p}.upgradeStrategy.hotUpgradeEmptyImage"),
                        "hotUpgradeEmptyImage must be different with container image",
                    ));
                }
                Some(_) => {}
            }
        }
        for (j, t) in
            c.get("transferEnv").and_then(Value::as_array).into_iter().flatten().enumerate()
        {
            let tp = format!("{p}.transferEnv[{j}]");
            let name =
                t.get("sourceContainerName").and_then(Value::as_str).is_some_and(|s| !s.is_empty());
            if name == set(t.get("sourceContainerNameFrom")) {
                causes.push(Cause::forbidden(
                    &tp,
                    "exactly one of sourceContainerName and sourceContainerNameFrom must be set",
                ));
            }
            let one = t.get("envName").and_then(Value::as_str).is_some_and(|s| !s.is_empty());
            let many = t.get("envNames").and_then(Value::as_array).is_some_and(|a| !a.is_empty());
            if one == many {
                causes
                    .push(Cause::forbidden(&tp, "exactly one of envName and envNames must be set"));
            }
        }
    }
    let strategy = spec.get("updateStrategy").cloned().unwrap_or(Value::Null);
    for f in ["partition", "maxUnavailable"] {
        if let Some(v) = strategy.get(f).and_then(Value::as_str)
            && v.strip_suffix('%').is_none_or(|n| n.parse::<u32>().is_err())
        {
            causes.push(crate::error::invalid(
                &format!("spec.updateStrategy.{f}"),
                v,
                "a valid percent string must be a numeric string followed by an ending '%'",
            ));
        }
    }
    if strategy.get("maxUnavailable").and_then(Value::as_i64).is_some_and(|n| n < 1) {
        causes.push(crate::error::invalid(
            "spec.updateStrategy.maxUnavailable",
            &strategy["maxUnavailable"].to_string(),
            "must be greater than 0",
        ));
    }
    for (i, m) in
        spec.get("patchPodMetadata").and_then(Value::as_array).into_iter().flatten().enumerate()
    {
        let p = format!("spec.patchPodMetadata[{i}]");
        let policy = m.get("patchPolicy").and_then(Value::as_str).unwrap_or("Retain");
        if !matches!(policy, "Retain" | "Overwrite" | "MergePatchJson") {
            causes.push(Cause {
                reason: "FieldValueNotSupported".into(),
                message: format!("Unsupported value: \"{policy}\": supported values: \"Retain\", \"Overwrite\", \"MergePatchJson\""),
                field: format!("{p}.patchPolicy"),
            });
        }
        if policy == "MergePatchJson" {
            for (k, v) in m.get("annotations").and_then(Value::as_object).into_iter().flatten() {
                let ok = v
                    .as_str()
                    .and_then(|s| serde_json::from_str::<Value>(s).ok())
                    .is_some_and(|j| j.is_object());
                if !ok {
                    causes.push(crate::error::invalid(
                        &format!("{p}.annotations[{k}]"),
                        v.as_str().unwrap_or(""),
                        "must be a json object when patchPolicy is MergePatchJson",
                    ));
                }
            }
        }
    }
    causes
}

/// The fields a SidecarSet container has beyond a core/v1 Container.
/// Upstream's `validateResourcesPolicy` (`kinetic_rollout::sidecarset::resources::validate`)
/// for container `c` at field path `p`.
fn validate_resources_policy(p: &str, c: &Value, policy: &Value, causes: &mut Vec<Cause>) {
    let field = |sub: &str| {
        if sub.is_empty() {
            format!("{p}.resourcesPolicy")
        } else {
            format!("{p}.resourcesPolicy.{sub}")
        }
    };
    let policy: kinetic_api::kruise::sidecarset::ResourcesPolicy =
        match serde_json::from_value(policy.clone()) {
            Ok(v) => v,
            Err(e) => {
                causes.push(Cause::invalid(&field(""), policy, &e.to_string()));
                return;
            }
        };
    let has_resources = ["limits", "requests"].iter().any(|k| {
        c.pointer(&format!("/resources/{k}"))
            .and_then(Value::as_object)
            .is_some_and(|m| !m.is_empty())
    });
    for (sub, msg, required) in
        kinetic_rollout::sidecarset::resources::validate(&policy, has_resources)
    {
        causes.push(if required {
            Cause::required(&field(&sub), &msg)
        } else {
            Cause::invalid(&field(&sub), &Value::Null, &msg)
        });
    }
}

const SIDECAR_FIELDS: [&str; 6] = [
    "podInjectPolicy",
    "upgradeStrategy",
    "shareVolumePolicy",
    "shareVolumeDevicePolicy",
    "transferEnv",
    "resourcesPolicy",
];

/// OpenKruise's pod mutating webhook, SidecarSet part, run by the pod strategy on create when
/// the webhooks are on: the SidecarSets, the namespace's labels and the pinned revisions are
/// read from the store, and [`kinetic_rollout::sidecarset::inject`] does the rest. A pod some
/// SidecarSet was already injected into (its `kruise.io/sidecarset-injected-list`) is not
/// injected again, so `kinetic controller`'s webhook and this admission never inject twice.
pub fn inject_sidecars(store: &crate::store::Store, pod: &mut Value) {
    use kinetic_api::kruise::sidecarset::{REVISION_NAMESPACE, SIDECARSET_NAME_LABEL, SidecarSet};
    use kinetic_rollout::sidecarset::{inject, resolve};

    use crate::registry::storage_key;
    use crate::store::ObjKey;

    let state = store.read();
    let sets_key = storage_key(GROUP, "sidecarsets");
    let sets: Vec<SidecarSet> = state
        .list(&sets_key, None, None)
        .filter_map(|(_, s)| serde_json::from_slice(&s.json).ok())
        .collect();
    if sets.is_empty() {
        return;
    }
    let ns = pod.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("").to_owned();
    let ns_labels: std::collections::BTreeMap<String, String> = state
        .get(&ObjKey::new(&storage_key("", "namespaces"), "", &ns))
        .and_then(|n| n.value().pointer("/metadata/labels").cloned())
        .and_then(|l| serde_json::from_value(l).ok())
        .unwrap_or_default();
    let chosen = inject::to_inject(pod, &sets, &ns_labels);
    if chosen.is_empty() {
        return;
    }
    let revs_key = storage_key("apps", "controllerrevisions");
    let resolved: Vec<inject::Resolved> = chosen
        .into_iter()
        .map(|ss| {
            let name = ss.metadata.name.as_deref().unwrap_or("");
            let revisions: Vec<k8s_openapi::api::apps::v1::ControllerRevision> =
                if ss.spec.injection_strategy.revision.is_some() {
                    state
                        .list(&revs_key, Some(REVISION_NAMESPACE), None)
                        .filter(|(_, r)| r.label(SIDECARSET_NAME_LABEL) == Some(Some(name)))
                        .filter_map(|(_, r)| serde_json::from_slice(&r.json).ok())
                        .collect()
                } else {
                    Vec::new()
                };
            resolve(ss, &revisions)
        })
        .collect();
    drop(state);
    let now = jiff::Timestamp::now().to_string();
    let cx = inject::InjectContext { namespace_labels: &ns_labels, now: &now };
    if let Err(e) = inject::inject(pod, &resolved, &cx) {
        // Refused at validation ([`injection_error`]): prepare_create cannot fail.
        if let Some(ann) = pod
            .pointer_mut("/metadata")
            .and_then(Value::as_object_mut)
            .map(|m| m.entry("annotations").or_insert_with(|| serde_json::json!({})))
            .and_then(Value::as_object_mut)
        {
            ann.insert(INJECTION_ERROR_ANNOTATION.into(), Value::String(e.to_string()));
        }
    }
}

/// Marks a pod whose SidecarSet injection failed (a `resourcesPolicy` that cannot be applied);
/// only ever on a pod being created, which validation then refuses, as upstream's webhook
/// refuses it.
pub const INJECTION_ERROR_ANNOTATION: &str = "kinetic.dev/sidecarset-injection-error";

/// The cause that refuses a pod marked by [`inject_sidecars`], if it is.
pub fn injection_error(pod: &Value) -> Option<Cause> {
    let msg = pod.pointer("/metadata/annotations")?.get(INJECTION_ERROR_ANNOTATION)?.as_str()?;
    Some(Cause::invalid(
        "spec.containers",
        &Value::Null,
        &format!("SidecarSet injection failed: {msg}"),
    ))
}

/// Upstream's `validateScaleStrategy`: each `scaleStrategy.podsToDelete` entry that `old` did
/// not list must name a pod (looked up by `pod`) controlled by this CloneSet, else `Invalid`
/// with upstream's `find pod NAME failed` / `pod NAME not owned by CloneSet`.
pub fn validate_pods_to_delete(
    obj: &Value,
    old: Option<&Value>,
    pod: impl Fn(&str) -> Option<Value>,
) -> Vec<Cause> {
    let names = |o: &Value| -> Vec<String> {
        o.pointer("/spec/scaleStrategy/podsToDelete")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect()
    };
    let before = old.map(names).unwrap_or_default();
    let uid = obj.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or("");
    let mut causes = Vec::new();
    for name in names(obj).into_iter().filter(|n| !before.contains(n)) {
        let detail = match pod(&name) {
            None => format!("find pod {name} failed"),
            Some(p) => {
                let owners = p.pointer("/metadata/ownerReferences").and_then(Value::as_array);
                let controller = owners
                    .into_iter()
                    .flatten()
                    .find(|o| o.get("controller").and_then(Value::as_bool) == Some(true));
                let ours = controller.and_then(|o| o.get("uid")).and_then(Value::as_str);
                if !uid.is_empty() && ours == Some(uid) {
                    continue;
                }
                format!("pod {name} not owned by CloneSet")
            }
        };
        causes.push(crate::error::invalid("spec.scaleStrategy.podsToDelete", &name, &detail));
    }
    causes
}

/// Fields of a CloneSet spec that may change after creation (validation.go, `validateCloneSetUpdate`).
const MUTABLE: [&str; 9] = [
    "replicas",
    "template",
    "scaleStrategy",
    "updateStrategy",
    "minReadySeconds",
    "lifecycle",
    "revisionHistoryLimit",
    "volumeClaimTemplates",
    "progressDeadlineSeconds",
];

fn validate_cloneset(obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    // The rules the controller applies too (on a real cluster no webhook runs), then the pod
    // template's own validation and the rules of an update.
    let mut causes = kinetic_rollout::validation::cloneset(obj);
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    validate_pod_spec(spec.pointer("/template/spec"), "spec.template.spec", &mut causes);
    if let Some(old) = old {
        causes.extend(kinetic_rollout::validation::cloneset_in_place_only_update(old, obj));
    }
    if let Some(old_spec) = old.and_then(|o| o.get("spec")) {
        let strip = |s: &Value| {
            let mut s = s.as_object().cloned().unwrap_or_default();
            for f in MUTABLE {
                s.remove(f);
            }
            s
        };
        if strip(&spec) != strip(old_spec) {
            causes.push(Cause::forbidden(
                "spec",
                "updates to cloneset spec for fields other than 'replicas', 'template', 'lifecycle', 'scaleStrategy', 'updateStrategy', 'minReadySeconds', 'volumeClaimTemplates' and 'revisionHistoryLimit' are forbidden",
            ));
        }
    }
    causes
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn cs(update: Value) -> Value {
        json!({"spec": {
            "replicas": 5,
            "selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "a"}},
                         "spec": {"containers": [{"name": "c", "image": "i"}]}},
            "updateStrategy": update,
        }})
    }

    fn fields(c: &[Cause]) -> Vec<String> {
        c.iter().map(|c| format!("{}: {}", c.field, c.message)).collect()
    }

    /// A UnitedDeployment whose subsets' fixed replicas exceed `spec.replicas`, or whose
    /// template has no containers, is refused; a subset's node selector term is immutable.
    #[test]
    fn united_deployment_follows_the_webhook() {
        let ud = json!({"spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "a"}},
            "template": {"cloneSetTemplate": {"spec": {
                "selector": {"matchLabels": {"app": "a"}},
                "template": {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}},
            "topology": {"subsets": [{"name": "x", "nodeSelectorTerm": {"matchExpressions": [{"key": "k", "operator": "In", "values": ["v"]}]}}]},
        }});
        assert_eq!(fields(&validate("UnitedDeployment", &ud, None)), Vec::<String>::new());
        let mut bad = ud.clone();
        bad["spec"]["topology"]["subsets"][0]["replicas"] = json!(3);
        bad["spec"]["template"]["cloneSetTemplate"]["spec"]["template"]["spec"]["containers"] =
            json!([]);
        bad["spec"]["topology"]["subsets"][0]["nodeSelectorTerm"] = json!({});
        let got: Vec<String> =
            validate("UnitedDeployment", &bad, Some(&ud)).into_iter().map(|c| c.field).collect();
        assert_eq!(
            got,
            [
                "spec.topology.subsets",
                "spec.topology.subsets",
                "spec.template.cloneSetTemplate.spec.template.spec.containers",
                "spec.topology.subsets[0].nodeSelectorTerm",
            ]
        );
    }

    #[test]
    fn sidecarset_follows_the_webhook() {
        let good = json!({"spec": {
            "selector": {"matchLabels": {"app": "a"}},
            "containers": [{"name": "side", "image": "busybox", "podInjectPolicy": "AfterAppContainer"}],
        }});
        assert!(
            validate("SidecarSet", &good, None).is_empty(),
            "{:?}",
            fields(&validate("SidecarSet", &good, None))
        );
        let bad = json!({"spec": {
            "namespace": "default",
            "namespaceSelector": {"matchLabels": {"a": "b"}},
            "containers": [
                {"name": "side", "podInjectPolicy": "Middle"},
                {"name": "hot", "image": "envoy", "upgradeStrategy": {"upgradeType": "HotUpgrade"},
                 "transferEnv": [{"envName": "X"}]},
            ],
            "updateStrategy": {"maxUnavailable": 0, "partition": "x"},
            "patchPodMetadata": [{"annotations": {"k": "not json"}, "patchPolicy": "MergePatchJson"}],
        }});
        let mut got: Vec<String> =
            validate("SidecarSet", &bad, None).into_iter().map(|c| c.field).collect();
        got.sort();
        assert_eq!(
            got,
            [
                "spec.containers[0].image",
                "spec.containers[0].podInjectPolicy",
                "spec.containers[1].transferEnv[0]",
                "spec.containers[1].upgradeStrategy.hotUpgradeEmptyImage",
                "spec.namespace",
                "spec.patchPodMetadata[0].annotations[k]",
                "spec.selector",
                "spec.updateStrategy.maxUnavailable",
                "spec.updateStrategy.partition",
            ]
        );
    }

    #[test]
    fn follows_the_webhook() {
        assert!(validate("CloneSet", &cs(json!({"maxUnavailable": "20%"})), None).is_empty());
        let c = validate(
            "CloneSet",
            &cs(json!({"type": "InPlaceOnly", "maxSurge": 1, "maxUnavailable": 0})),
            None,
        );
        assert_eq!(
            fields(&c),
            [
                "spec.updateStrategy.maxSurge: Invalid value: \"1\": can not use maxSurge with strategy type InPlaceOnly"
            ]
        );
        let c = validate("CloneSet", &cs(json!({"maxUnavailable": 0, "maxSurge": "0%"})), None);
        assert_eq!(c.len(), 1, "{:?}", fields(&c));
        assert!(c[0].message.contains("should not both be less than 1"));
        let c = validate("CloneSet", &cs(json!({"type": "Rolling", "partition": "x%"})), None);
        assert_eq!(c.len(), 2, "{:?}", fields(&c));
        // Only the listed fields may change.
        let old = cs(json!({}));
        let mut new = old.clone();
        new["spec"]["selector"] = json!({"matchLabels": {"app": "b"}});
        new["spec"]["template"]["metadata"]["labels"] = json!({"app": "b"});
        let c = validate("CloneSet", &new, Some(&old));
        assert_eq!(c.len(), 1, "{:?}", fields(&c));
        assert_eq!(c[0].field, "spec");
    }

    #[test]
    fn pod_unavailable_budgets_follow_the_webhook() {
        let pub_ = |spec: Value| validate("PodUnavailableBudget", &json!({"spec": spec}), None);
        assert!(
            pub_(json!({"selector": {"matchLabels": {"a": "b"}}, "maxUnavailable": "60%"}))
                .is_empty()
        );
        assert!(pub_(json!({"targetRef": {"apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet", "name": "w"}, "minAvailable": 1})).is_empty());
        let c = pub_(json!({"maxUnavailable": 1}));
        assert_eq!(
            fields(&c),
            [
                "spec.selector: Invalid value: null: no selector or targetRef defined in PodUnavailableBudget"
            ]
        );
        let c = pub_(json!({"selector": {}, "maxUnavailable": 1, "minAvailable": 1}));
        assert_eq!(c.len(), 2, "{:?}", fields(&c));
        assert!(c[0].message.contains("empty selector is not valid"));
        assert!(c[1].message.contains("mutually exclusive"));
        let c = pub_(json!({"selector": {"matchLabels": {"a": "b"}}, "maxUnavailable": "150%"}));
        assert!(c[0].message.contains("must not be greater than 100%"), "{:?}", fields(&c));
    }
}
