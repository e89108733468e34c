//! Defaults and validation of StatefulSets, as JSON in and field causes out: upstream's
//! `pkg/apis/apps/v1/defaults.go` (`SetDefaults_StatefulSet`) and
//! `pkg/apis/apps/validation` (`ValidateStatefulSetSpec`, `ValidateStatefulSetUpdate`) for
//! `apps/v1`, and OpenKruise's webhook (`pkg/webhook/statefulset/mutating` and
//! `validating/statefulset_validation.go`) for the Advanced StatefulSet (`kruise = true`).
//!
//! The embedded API server applies both at admission; the controller applies [`validate`]
//! before acting, since on a real cluster no Kruise webhook runs. A `null` field counts as
//! absent.

use kinetic_machinery::schema::FieldCause;
use serde_json::{Map, Value, json};

fn set_default(m: &mut Map<String, Value>, key: &str, v: Value) {
    if m.get(key).is_none_or(Value::is_null) {
        m.insert(key.to_owned(), v);
    }
}

fn obj_mut<'a>(m: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Map<String, Value>> {
    if !m.get(key).is_some_and(Value::is_object) {
        m.insert(key.to_owned(), json!({}));
    }
    m.get_mut(key)?.as_object_mut()
}

/// Upstream's defaults of a StatefulSet's spec (pod template defaults are the caller's):
/// `replicas` 1, `podManagementPolicy` OrderedReady, `updateStrategy` RollingUpdate with
/// `partition` 0 (Kruise also `maxUnavailable` 1 and `podUpdatePolicy` ReCreate),
/// `revisionHistoryLimit` 10, `persistentVolumeClaimRetentionPolicy` Retain/Retain.
pub fn default(obj: &mut Value, kruise: bool) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else { return };
    set_default(spec, "replicas", json!(1));
    set_default(spec, "podManagementPolicy", json!("OrderedReady"));
    set_default(spec, "revisionHistoryLimit", json!(10));
    if let Some(st) = obj_mut(spec, "updateStrategy") {
        set_default(st, "type", json!("RollingUpdate"));
        if st.get("type") == Some(&json!("RollingUpdate"))
            && let Some(ru) = obj_mut(st, "rollingUpdate")
        {
            set_default(ru, "partition", json!(0));
            if kruise {
                set_default(ru, "maxUnavailable", json!(1));
                set_default(ru, "podUpdatePolicy", json!("ReCreate"));
            }
        }
    }
    if let Some(p) = obj_mut(spec, "persistentVolumeClaimRetentionPolicy") {
        set_default(p, "whenDeleted", json!("Retain"));
        set_default(p, "whenScaled", json!("Retain"));
    }
}

fn int(v: Option<&Value>) -> Option<i64> {
    v.and_then(Value::as_i64)
}

fn not_supported(field: &str, v: &Value, supported: &[&str]) -> FieldCause {
    FieldCause::not_supported(
        field,
        v,
        &supported.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
    )
}

fn non_negative(spec: &Value, path: &str, field: &str, causes: &mut Vec<FieldCause>) {
    if let Some(n) = int(spec.pointer(path))
        && n < 0
    {
        causes.push(FieldCause::invalid(field, &json!(n), "must be greater than or equal to 0"));
    }
}

/// The rules of one StatefulSet `obj` (the whole object) that need no other object.
pub fn validate(obj: &Value, kruise: bool) -> Vec<FieldCause> {
    let mut causes = crate::validation::workload_selector(obj, "statefulset");
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    non_negative(&spec, "/replicas", "spec.replicas", &mut causes);
    non_negative(&spec, "/minReadySeconds", "spec.minReadySeconds", &mut causes);
    non_negative(&spec, "/revisionHistoryLimit", "spec.revisionHistoryLimit", &mut causes);
    non_negative(&spec, "/ordinals/start", "spec.ordinals.start", &mut causes);
    if let Some(p) = spec.get("podManagementPolicy").filter(|v| !v.is_null())
        && !matches!(p.as_str(), Some("OrderedReady" | "Parallel"))
    {
        causes.push(not_supported("spec.podManagementPolicy", p, &["OrderedReady", "Parallel"]));
    }
    for which in ["whenDeleted", "whenScaled"] {
        if let Some(v) = spec.pointer(&format!("/persistentVolumeClaimRetentionPolicy/{which}"))
            && !v.is_null()
            && !matches!(v.as_str(), Some("Retain" | "Delete"))
        {
            causes.push(not_supported(
                &format!("spec.persistentVolumeClaimRetentionPolicy.{which}"),
                v,
                &["Retain", "Delete"],
            ));
        }
    }
    update_strategy(&spec, kruise, &mut causes);
    let tspec = spec.pointer("/template/spec");
    if let Some(rp) = tspec.and_then(|s| s.get("restartPolicy")).filter(|v| !v.is_null())
        && rp.as_str() != Some("Always")
    {
        causes.push(not_supported("spec.template.spec.restartPolicy", rp, &["Always"]));
    }
    if tspec.and_then(|s| s.get("activeDeadlineSeconds")).is_some_and(|v| !v.is_null()) {
        causes.push(FieldCause::forbidden(
            "spec.template.spec.activeDeadlineSeconds",
            "activeDeadlineSeconds in StatefulSet is not Supported",
        ));
    }
    for (i, t) in
        spec.get("volumeClaimTemplates").and_then(Value::as_array).into_iter().flatten().enumerate()
    {
        if t.pointer("/metadata/name").and_then(Value::as_str).is_none_or(str::is_empty) {
            causes.push(FieldCause::required(
                &format!("spec.volumeClaimTemplates[{i}].metadata.name"),
                "",
            ));
        }
    }
    if kruise && let Some(list) = spec.get("reserveOrdinals").filter(|v| !v.is_null()) {
        let parsed: Result<Vec<_>, _> = serde_json::from_value(list.clone());
        match parsed.map(|l: Vec<_>| super::reserved_ordinals(&l)) {
            Ok(Ok(set)) if set.iter().all(|o| *o >= 0) => {}
            Ok(Ok(_)) => causes.push(FieldCause::invalid(
                "spec.reserveOrdinals",
                list,
                "reserveOrdinals must be greater than or equal to 0",
            )),
            Ok(Err(e)) => {
                causes.push(FieldCause::invalid("spec.reserveOrdinals", list, &e.to_string()))
            }
            Err(_) => causes.push(FieldCause::invalid(
                "spec.reserveOrdinals",
                list,
                "must be a list of integers or ranges",
            )),
        }
    }
    causes
}

fn update_strategy(spec: &Value, kruise: bool, causes: &mut Vec<FieldCause>) {
    let st = spec.get("updateStrategy").cloned().unwrap_or(Value::Null);
    let ty = st.get("type").and_then(Value::as_str).unwrap_or("RollingUpdate");
    let ru = st.get("rollingUpdate").filter(|v| !v.is_null());
    match ty {
        "RollingUpdate" => {}
        "OnDelete" => {
            if ru.is_some() {
                causes.push(FieldCause::invalid(
                    "spec.updateStrategy.rollingUpdate",
                    &json!(ru),
                    "only allowed for updateStrategy 'RollingUpdate'",
                ));
            }
        }
        _ => causes.push(not_supported(
            "spec.updateStrategy.type",
            &json!(ty),
            &["OnDelete", "RollingUpdate"],
        )),
    }
    let Some(ru) = ru else { return };
    non_negative(ru, "/partition", "spec.updateStrategy.rollingUpdate.partition", causes);
    if let Some(m) = ru.get("maxUnavailable").filter(|v| !v.is_null()) {
        let field = "spec.updateStrategy.rollingUpdate.maxUnavailable";
        let ok = match m {
            Value::Number(n) => n.as_i64().is_some_and(|n| n > 0),
            Value::String(s) => s
                .strip_suffix('%')
                .and_then(|p| p.parse::<i64>().ok())
                .is_some_and(|p| (1..=100).contains(&p)),
            _ => false,
        };
        if !ok {
            causes.push(FieldCause::invalid(
                field,
                m,
                "must be greater than 0 (an integer or a percentage up to 100%)",
            ));
        }
    }
    if !kruise {
        return;
    }
    if let Some(p) = ru.get("podUpdatePolicy").filter(|v| !v.is_null())
        && !matches!(p.as_str(), Some("ReCreate" | "InPlaceIfPossible" | "InPlaceOnly"))
    {
        causes.push(not_supported(
            "spec.updateStrategy.rollingUpdate.podUpdatePolicy",
            p,
            &["ReCreate", "InPlaceIfPossible", "InPlaceOnly"],
        ));
    }
    if let Some(n) = int(ru.get("minReadySeconds"))
        && !(0..=300).contains(&n)
    {
        causes.push(FieldCause::invalid(
            "spec.updateStrategy.rollingUpdate.minReadySeconds",
            &json!(n),
            "should be in [0, 300]",
        ));
    }
}

/// apps/v1: the spec fields an update may change (`ValidateStatefulSetUpdate`, 1.31).
const MUTABLE_APPS: &[&str] = &[
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "revisionHistoryLimit",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
];
/// Advanced StatefulSet: Kruise's webhook lets more change (reserved ordinals, hooks, scale
/// strategy, claim templates).
const MUTABLE_KRUISE: &[&str] = &[
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "revisionHistoryLimit",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
    "reserveOrdinals",
    "lifecycle",
    "scaleStrategy",
    "volumeClaimTemplates",
];

/// The rules of an update: only the mutable spec fields may change.
pub fn validate_update(old: &Value, new: &Value, kruise: bool) -> Vec<FieldCause> {
    let mutable = if kruise { MUTABLE_KRUISE } else { MUTABLE_APPS };
    let strip = |o: &Value| {
        let mut s = o.get("spec").and_then(Value::as_object).cloned().unwrap_or_default();
        s.retain(|k, v| !mutable.contains(&k.as_str()) && !v.is_null());
        s
    };
    if strip(old) == strip(new) {
        return Vec::new();
    }
    let list = mutable.iter().map(|f| format!("'{f}'")).collect::<Vec<_>>();
    let (last, rest) = list.split_last().map_or(("", &[][..]), |(l, r)| (l.as_str(), r));
    vec![FieldCause::forbidden(
        "spec",
        &format!(
            "updates to statefulset spec for fields other than {} and {last} are forbidden",
            rest.join(", ")
        ),
    )]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sts() -> Value {
        json!({"spec": {
            "serviceName": "web",
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "c", "image": "i"}]}},
        }})
    }

    fn messages(c: &[FieldCause]) -> Vec<String> {
        c.iter().map(|c| format!("{}: {}", c.field, c.message)).collect()
    }

    #[test]
    fn defaults_follow_upstream() {
        let mut o = sts();
        default(&mut o, false);
        let s = &o["spec"];
        assert_eq!(s["replicas"], 1);
        assert_eq!(s["podManagementPolicy"], "OrderedReady");
        assert_eq!(s["revisionHistoryLimit"], 10);
        assert_eq!(
            s["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
        );
        assert_eq!(
            s["persistentVolumeClaimRetentionPolicy"],
            json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
        );
        let mut k = sts();
        default(&mut k, true);
        assert_eq!(
            k["spec"]["updateStrategy"]["rollingUpdate"],
            json!({"partition": 0, "maxUnavailable": 1, "podUpdatePolicy": "ReCreate"})
        );
        let mut d = sts();
        d["spec"]["updateStrategy"] = json!({"type": "OnDelete"});
        default(&mut d, true);
        assert_eq!(d["spec"]["updateStrategy"], json!({"type": "OnDelete"}));
    }

    #[test]
    fn validation_table() {
        #[rustfmt::skip]
        let cases: &[(&str, &str, Value, bool, &[&str])] = &[
            ("valid", "", json!(null), false, &[]),
            ("bad policy", "/spec/podManagementPolicy", json!("Random"), false,
             &["spec.podManagementPolicy: Unsupported value: \"Random\": supported values: \"OrderedReady\", \"Parallel\""]),
            ("negative replicas", "/spec/replicas", json!(-1), false,
             &["spec.replicas: Invalid value: -1: must be greater than or equal to 0"]),
            ("OnDelete with rollingUpdate", "/spec/updateStrategy", json!({"type": "OnDelete", "rollingUpdate": {"partition": 1}}), false,
             &["spec.updateStrategy.rollingUpdate: Invalid value: {\"partition\":1}: only allowed for updateStrategy 'RollingUpdate'"]),
            ("restartPolicy Never", "/spec/template/spec/restartPolicy", json!("Never"), false,
             &["spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\""]),
            ("bad podUpdatePolicy", "/spec/updateStrategy", json!({"rollingUpdate": {"podUpdatePolicy": "Magic"}}), true,
             &["spec.updateStrategy.rollingUpdate.podUpdatePolicy: Unsupported value: \"Magic\": supported values: \"ReCreate\", \"InPlaceIfPossible\", \"InPlaceOnly\""]),
            ("minReadySeconds over 300", "/spec/updateStrategy", json!({"rollingUpdate": {"minReadySeconds": 301}}), true,
             &["spec.updateStrategy.rollingUpdate.minReadySeconds: Invalid value: 301: should be in [0, 300]"]),
            ("maxUnavailable 0", "/spec/updateStrategy", json!({"rollingUpdate": {"maxUnavailable": 0}}), true,
             &["spec.updateStrategy.rollingUpdate.maxUnavailable: Invalid value: 0: must be greater than 0 (an integer or a percentage up to 100%)"]),
            ("reserved ranges", "/spec/reserveOrdinals", json!([1, "3-5"]), true, &[]),
            ("reserved backwards", "/spec/reserveOrdinals", json!(["5-3"]), true,
             &["spec.reserveOrdinals: Invalid value: [\"5-3\"]: invalid reserveOrdinals entry \"5-3\": must be an integer or a range like \"3-5\""]),
        ];
        for (name, path, value, kruise, want) in cases {
            let mut o = sts();
            if !path.is_empty() {
                let (parent, key) = path.rsplit_once('/').unwrap_or_default();
                if let Some(m) = o.pointer_mut(parent).and_then(Value::as_object_mut) {
                    m.insert(key.to_owned(), value.clone());
                }
            }
            assert_eq!(messages(&validate(&o, *kruise)), *want, "{name}");
        }
        let mut bad = sts();
        bad["spec"]["template"]["metadata"]["labels"] = json!({"app": "other"});
        assert_eq!(
            messages(&validate(&bad, false)),
            [
                "spec.template.metadata.labels: Invalid value: \"{\\\"app\\\":\\\"other\\\"}\": `selector` does not match template `labels`"
            ]
        );
    }

    #[test]
    fn only_mutable_fields_change() {
        let old = sts();
        let mut new = old.clone();
        new["spec"]["replicas"] = json!(5);
        new["spec"]["updateStrategy"] = json!({"type": "OnDelete"});
        assert!(validate_update(&old, &new, false).is_empty());
        new["spec"]["serviceName"] = json!("other");
        let c = validate_update(&old, &new, false);
        assert_eq!(
            messages(&c),
            [
                "spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"
            ]
        );
        let mut k = old.clone();
        k["spec"]["reserveOrdinals"] = json!([1]);
        assert!(validate_update(&old, &k, true).is_empty());
        assert_eq!(validate_update(&old, &k, false).len(), 1);
    }
}
