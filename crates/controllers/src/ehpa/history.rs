//! An autoscaler's metric history, kept in memory and persisted through the API so that a
//! restarted (or newly elected) controller forecasts at once instead of scaling reactively
//! until it has seen two cycles again.
//!
//! Crane keeps what its predictor learnt in its own objects (a `TimeSeriesPrediction` per
//! EHPA, read from a metrics store); Kinetic keeps the samples themselves in a ConfigMap per
//! autoscaler, [`configmap_name`] in the autoscaler's namespace, owned by it (so it goes with
//! it), key [`DATA_KEY`]: `{"stepSeconds": 60, "series": {"<metric>": {"firstSlot": n,
//! "values": [v, null, …]}}}`, slot `n` being Unix seconds / step and `null` a step without a
//! read. It is bounded: at most `dsp.historyLength / sampleInterval` samples per metric (what
//! the forecast uses) and never more than [`MAX_PERSISTED`] (14 days of minutes, about 150 KB,
//! well under a ConfigMap's 1 MiB), and written at most once per step (a minute by default),
//! so a restart loses at most one step. A history written with another step is ignored.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kinetic_api::crane::EffectiveHorizontalPodAutoscaler;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, Resource as _, ResourceExt as _};
use serde_json::{Value, json};

/// The ConfigMap's key holding the history.
pub const DATA_KEY: &str = "history.json";
/// The most samples persisted per metric.
pub const MAX_PERSISTED: usize = 14 * 1440;

/// The ConfigMap holding the history of the autoscaler named `ehpa`.
pub fn configmap_name(ehpa: &str) -> String {
    format!("ehpa-history-{ehpa}")
}

/// One metric's history at a fixed step: the mean of the reads within each step.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Series {
    /// Step index (Unix seconds / step) → (sum, count).
    slots: BTreeMap<u64, (f64, u32)>,
}

impl Series {
    pub fn record(&mut self, now_secs: f64, step: f64, keep: usize, value: f64) {
        let slot = (now_secs / step).floor() as u64;
        let e = self.slots.entry(slot).or_insert((0.0, 0));
        e.0 += value;
        e.1 += 1;
        let oldest = slot.saturating_sub(keep as u64);
        self.slots.retain(|k, _| *k > oldest);
    }

    /// Samples from the oldest kept step to the current one, `None` where none was read.
    pub fn samples(&self) -> Vec<Option<f64>> {
        let (Some(first), Some(last)) = (self.slots.keys().next(), self.slots.keys().last()) else {
            return vec![];
        };
        (*first..=*last).map(|k| self.slots.get(&k).map(|(s, c)| s / f64::from(*c))).collect()
    }
}

/// The persisted form of `series` at `step` seconds: the newest `keep` (at most
/// [`MAX_PERSISTED`]) samples of each.
pub fn encode(series: &HashMap<String, Series>, step: f64, keep: usize) -> Value {
    let keep = keep.clamp(1, MAX_PERSISTED);
    let mut out = serde_json::Map::new();
    let mut keys: Vec<&String> = series.keys().collect();
    keys.sort();
    for k in keys {
        let s = &series[k];
        let Some(&last) = s.slots.keys().last() else { continue };
        let first = s
            .slots
            .keys()
            .next()
            .copied()
            .unwrap_or(last)
            .max(last.saturating_sub(keep as u64 - 1));
        let values: Vec<Value> = (first..=last)
            .map(|slot| match s.slots.get(&slot) {
                // Milli-units: three decimals are below the metric's own resolution.
                Some((sum, n)) => json!(((sum / f64::from(*n)) * 1000.0).round() / 1000.0),
                None => Value::Null,
            })
            .collect();
        out.insert(k.clone(), json!({"firstSlot": first, "values": values}));
    }
    json!({"stepSeconds": step, "series": out})
}

/// The series of a persisted history, if it was written at `step` seconds (else none: the
/// slots would mean other times). At most `keep` samples per metric are kept.
pub fn decode(v: &Value, step: f64, keep: usize) -> HashMap<String, Series> {
    let mut out = HashMap::new();
    let same_step = v["stepSeconds"].as_f64().is_some_and(|s| (s - step).abs() < 1e-9);
    let Some(series) = v["series"].as_object().filter(|_| same_step) else { return out };
    for (k, s) in series {
        let (Some(first), Some(values)) = (s["firstSlot"].as_u64(), s["values"].as_array()) else {
            continue;
        };
        let skip = values.len().saturating_sub(keep.max(1));
        let mut ser = Series::default();
        for (i, x) in values.iter().enumerate().skip(skip) {
            if let Some(x) = x.as_f64().filter(|x| x.is_finite()) {
                ser.slots.insert(first + i as u64, (x, 1));
            }
        }
        if !ser.slots.is_empty() {
            out.insert(k.clone(), ser);
        }
    }
    out
}

/// Reads the persisted history of `e` (none when absent, unreadable or of another step).
pub async fn load(
    client: &Client,
    e: &EffectiveHorizontalPodAutoscaler,
    step: f64,
    keep: usize,
) -> HashMap<String, Series> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &e.namespace().unwrap_or_default());
    match api.get_opt(&configmap_name(&e.name_any())).await {
        Ok(Some(cm)) => cm
            .data
            .as_ref()
            .and_then(|d| d.get(DATA_KEY))
            .and_then(|s| serde_json::from_str::<Value>(s).ok())
            .map(|v| decode(&v, step, keep))
            .unwrap_or_default(),
        Ok(None) => HashMap::new(),
        Err(err) => {
            tracing::warn!(ehpa = %e.name_any(), error = %err, "reading the persisted history");
            HashMap::new()
        }
    }
}

/// Writes `history` (from [`encode`]) to `e`'s ConfigMap, creating it owned by `e`.
///
/// # Errors
/// The API server's refusal.
pub async fn save(
    client: &Client,
    e: &EffectiveHorizontalPodAutoscaler,
    history: &Value,
) -> Result<(), kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &e.namespace().unwrap_or_default());
    let name = configmap_name(&e.name_any());
    let text = history.to_string();
    let patch = json!({"data": {DATA_KEY: text}});
    match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => {
            let owner = OwnerReference {
                api_version: EffectiveHorizontalPodAutoscaler::api_version(&()).into_owned(),
                kind: EffectiveHorizontalPodAutoscaler::kind(&()).into_owned(),
                name: e.name_any(),
                uid: e.uid().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: None,
            };
            let cm = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(name),
                    namespace: e.namespace(),
                    owner_references: Some(vec![owner]),
                    labels: Some(BTreeMap::from([(
                        "app.kubernetes.io/managed-by".to_owned(),
                        "effective-hpa-controller".to_owned(),
                    )])),
                    ..ObjectMeta::default()
                },
                data: Some(BTreeMap::from([(DATA_KEY.to_owned(), text)])),
                ..ConfigMap::default()
            };
            api.create(&PostParams::default(), &cm).await.map(|_| ())
        }
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_series_averages_reads_per_step_and_keeps_gaps() {
        let mut s = Series::default();
        s.record(100.2, 1.0, 10, 1.0);
        s.record(100.7, 1.0, 10, 3.0);
        s.record(102.1, 1.0, 10, 5.0);
        assert_eq!(s.samples(), vec![Some(2.0), None, Some(5.0)]);
        s.record(120.0, 1.0, 10, 7.0);
        assert_eq!(s.samples().len(), 1, "older than the history length is dropped");
    }

    #[test]
    fn a_history_round_trips_bounded_and_only_at_its_step() {
        let mut s = Series::default();
        for t in [100.0, 101.0, 103.0, 104.0, 105.0] {
            s.record(t, 1.0, 100, t * 10.0 + 0.00049);
        }
        let series = HashMap::from([("external/load".to_owned(), s.clone())]);
        let v = encode(&series, 1.0, 100);
        assert_eq!(v["series"]["external/load"]["firstSlot"], 100);
        assert_eq!(v["series"]["external/load"]["values"][2], Value::Null);
        let back = decode(&v, 1.0, 100);
        assert_eq!(
            back["external/load"].samples(),
            vec![Some(1000.0), Some(1010.0), None, Some(1030.0), Some(1040.0), Some(1050.0)]
        );
        // Bounded by `keep` on both sides.
        let v = encode(&series, 1.0, 3);
        assert_eq!(v["series"]["external/load"]["firstSlot"], 103);
        assert_eq!(decode(&v, 1.0, 2)["external/load"].samples(), vec![Some(1040.0), Some(1050.0)]);
        // Another step: the slots would mean other times.
        assert!(decode(&v, 60.0, 100).is_empty());
        assert!(decode(&json!({"series": 1}), 1.0, 100).is_empty());
    }
}
