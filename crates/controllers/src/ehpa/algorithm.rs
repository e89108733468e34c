//! `spec.prediction.predictionAlgorithm.percentile` read as Crane reads it
//! (`pkg/prediction/percentile/config.go`, `makeInternalConfig`): every number a string, the
//! histogram exponential when `bucketSizeGrowthRatio`, `firstBucketSize` and `maxValue` are
//! all set, linear when `bucketSize` and `maxValue` are, else Crane's default; the half-life a
//! duration.

use kinetic_predict::percentile::{Buckets, Config};
use serde_json::Value;

use super::crane_duration;

/// A field as Crane's `utils.ParseFloat(s, default)`: empty or absent is the default.
fn float(v: &Value, field: &str, default: f64) -> Result<f64, String> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::String(s)) if s.is_empty() => Ok(default),
        Some(Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .ok_or_else(|| format!("percentile.{field}: not a number: {s:?}")),
        Some(Value::Number(n)) => {
            n.as_f64().ok_or_else(|| format!("percentile.{field}: not a number"))
        }
        Some(other) => Err(format!("percentile.{field}: not a number: {other}")),
    }
}

fn set(v: &Value, field: &str) -> bool {
    v.get(field).is_some_and(|x| !x.is_null() && x.as_str() != Some(""))
}

/// Crane's percentile configuration from the spec's `percentile` object (absent: defaults).
///
/// # Errors
/// A field that is not a number or a duration, or a histogram the VPA refuses.
pub fn percentile_config(v: Option<&Value>) -> Result<Config, String> {
    let d = Config::default();
    let Some(v) = v.filter(|v| v.is_object()) else { return Ok(d) };
    let empty = Value::Object(serde_json::Map::new());
    let h = v.get("histogram").filter(|h| h.is_object()).unwrap_or(&empty);
    let buckets =
        if set(h, "bucketSizeGrowthRatio") && set(h, "firstBucketSize") && set(h, "maxValue") {
            Buckets::Exponential {
                max_value: float(h, "maxValue", 0.0)?,
                first_bucket_size: float(h, "firstBucketSize", 0.0)?,
                ratio: 1.0 + float(h, "bucketSizeGrowthRatio", 0.0)?,
                epsilon: float(h, "epsilon", 1e-10)?,
            }
        } else if set(h, "bucketSize") && set(h, "maxValue") {
            Buckets::Linear {
                max_value: float(h, "maxValue", 0.0)?,
                bucket_size: float(h, "bucketSize", 0.0)?,
                epsilon: float(h, "epsilon", 1e-10)?,
            }
        } else {
            Buckets::DEFAULT
        };
    buckets.validate().map_err(|e| format!("percentile.histogram: {e}"))?;
    let half_life = match h.get("halfLife").and_then(Value::as_str).filter(|s| !s.is_empty()) {
        Some(s) => crane_duration(s)
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("percentile.histogram.halfLife: not a duration: {s:?}"))?
            .as_secs_f64(),
        None => d.half_life_secs,
    };
    Ok(Config {
        buckets,
        half_life_secs: half_life,
        min_sample_weight: float(v, "minSampleWeight", d.min_sample_weight)?,
        margin_fraction: float(v, "marginFraction", d.margin_fraction)?,
        percentile: float(v, "percentile", d.percentile)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn percentile_settings_parse_as_crane_reads_them() {
        let d = Config::default();
        // (spec, expected)
        let cases: Vec<(Value, Result<Config, String>)> = vec![
            (Value::Null, Ok(d)),
            (json!({}), Ok(d)),
            (
                json!({"percentile": "0.99", "marginFraction": "0.2", "histogram": {"halfLife": "12h"}}),
                Ok(Config {
                    percentile: 0.99,
                    margin_fraction: 0.2,
                    half_life_secs: 43_200.0,
                    ..d
                }),
            ),
            (
                json!({"histogram": {"maxValue": "1000", "bucketSize": "1"}}),
                Ok(Config {
                    buckets: Buckets::Linear {
                        max_value: 1000.0,
                        bucket_size: 1.0,
                        epsilon: 1e-10,
                    },
                    ..d
                }),
            ),
            (
                json!({"histogram": {"maxValue": "1000", "firstBucketSize": "0.01", "bucketSizeGrowthRatio": "0.05"}}),
                Ok(Config {
                    buckets: Buckets::Exponential {
                        max_value: 1000.0,
                        first_bucket_size: 0.01,
                        ratio: 1.05,
                        epsilon: 1e-10,
                    },
                    ..d
                }),
            ),
            // Only a bucket size: Crane's default histogram.
            (json!({"histogram": {"bucketSize": "5"}}), Ok(d)),
            (
                json!({"percentile": "high"}),
                Err("percentile.percentile: not a number: \"high\"".into()),
            ),
            (
                json!({"histogram": {"maxValue": "-1", "bucketSize": "1"}}),
                Err("percentile.histogram: maxValue and bucketSize must both be positive".into()),
            ),
            (
                json!({"histogram": {"halfLife": "soon"}}),
                Err("percentile.histogram.halfLife: not a duration: \"soon\"".into()),
            ),
        ];
        for (spec, want) in cases {
            let got = percentile_config(Some(&spec));
            assert_eq!(got, want, "{spec}");
        }
    }
}
