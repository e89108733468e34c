//! `policy/v1` PodDisruptionBudget, as kube-apiserver prints it (`printPodDisruptionBudget`):
//! `N/A` for the bound that is not set, the int-or-percent as written otherwise.

use jiff::Timestamp;
use serde_json::{Value, json};

use super::{Column, age, int, text};

pub(super) fn columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::string(
            "Min Available",
            "The minimum number or percentage of available pods this budget requires.",
        ),
        Column::string(
            "Max Unavailable",
            "The maximum number or percentage of unavailable pods this budget requires.",
        ),
        Column::integer(
            "Allowed Disruptions",
            "Calculated number of pods that may be disrupted at this time.",
        ),
        Column::age(),
    ]
}

/// An int-or-string as `intstr.String()` prints it; `N/A` when unset.
fn int_or_percent(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "N/A".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

pub(super) fn cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        json!(text(obj, "/metadata/name")),
        json!(int_or_percent(obj.pointer("/spec/minAvailable"))),
        json!(int_or_percent(obj.pointer("/spec/maxUnavailable"))),
        json!(int(obj, "/status/disruptionsAllowed")),
        json!(age(obj, now)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_the_bound_that_is_set() {
        let now = Timestamp::now();
        let pdb = json!({"metadata": {"name": "p"}, "spec": {"maxUnavailable": "25%"},
                         "status": {"disruptionsAllowed": 2}});
        let c = cells(&pdb, now);
        assert_eq!(
            (&c[0], &c[1], &c[2], &c[3]),
            (&json!("p"), &json!("N/A"), &json!("25%"), &json!(2))
        );
        let c = cells(&json!({"spec": {"minAvailable": 1}}), now);
        assert_eq!((&c[1], &c[2], &c[3]), (&json!("1"), &json!("N/A"), &json!(0)));
    }
}
