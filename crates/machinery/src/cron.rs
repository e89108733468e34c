//! CronJob schedules as Kubernetes reads them: robfig/cron v3's standard parser
//! (`cron.ParseStandard`: five fields, the `@yearly`…`@hourly` descriptors, `@every <duration>`,
//! an optional `TZ=`/`CRON_TZ=` prefix), evaluated in a time zone.
//!
//! Parsing and matching of the five fields is croner's (Vixie semantics: when both
//! day-of-month and day-of-week are restricted, either matches, as robfig's `dayMatches`);
//! this module adds what robfig has and croner spells differently (`@midnight`, `@every`, the
//! zone prefix) and refuses what croner accepts beyond the standard syntax (seconds, years).
//! Differences kept: croner also takes `L`, `W` and `#` in the day fields, which robfig refuses.
//!
//! Time zones are TZif data (the caller reads `/usr/share/zoneinfo/<name>`: this crate does no
//! I/O), as Go's `time.LoadLocation` reads the system database.

use croner::parser::{CronParser, Seconds, Year};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

/// A parsed schedule.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// Five cron fields (or a descriptor standing for them).
    Fields(Box<croner::Cron>),
    /// `@every <duration>` (robfig's `ConstantDelaySchedule`: whole seconds, at least 1 s).
    Every(SignedDuration),
}

/// A schedule and the time zone its `TZ=` prefix names, if any.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub schedule: Schedule,
    pub zone: Option<String>,
}

/// Parses a CronJob's `spec.schedule`.
///
/// # Errors
/// The text is not a standard cron schedule; the message says why (robfig's wording where it
/// has one).
pub fn parse(text: &str) -> Result<Parsed, String> {
    let mut spec = text.trim();
    let mut zone = None;
    if spec.starts_with("TZ=") || spec.starts_with("CRON_TZ=") {
        let Some(i) = spec.find(' ') else {
            return Err(format!("provided bad location {spec}: missing schedule after the zone"));
        };
        let (_, name) = spec[..i].split_once('=').unwrap_or_default();
        zone = Some(name.to_owned());
        spec = spec[i..].trim();
    }
    if spec.is_empty() {
        return Err("empty spec string".to_owned());
    }
    if let Some(d) = spec.strip_prefix("@every ") {
        let dur = parse_go_duration(d.trim())
            .ok_or_else(|| format!("failed to parse duration @every {}", d.trim()))?;
        // robfig rounds down to whole seconds and takes at least one.
        let secs = dur.as_secs().max(1);
        return Ok(Parsed { schedule: Schedule::Every(SignedDuration::from_secs(secs)), zone });
    }
    let spec = if spec.eq_ignore_ascii_case("@midnight") { "@daily" } else { spec };
    if spec.starts_with('@') && !is_descriptor(spec) {
        return Err(format!("unrecognized descriptor: {spec}"));
    }
    if !spec.starts_with('@') && spec.split_whitespace().count() != 5 {
        return Err(format!(
            "expected exactly 5 fields, found {}: {spec}",
            spec.split_whitespace().count()
        ));
    }
    let parser = CronParser::builder().seconds(Seconds::Disallowed).year(Year::Disallowed).build();
    let cron = parser.parse(spec).map_err(|e| e.to_string())?;
    Ok(Parsed { schedule: Schedule::Fields(Box::new(cron)), zone })
}

fn is_descriptor(s: &str) -> bool {
    ["@yearly", "@annually", "@monthly", "@weekly", "@daily", "@hourly"]
        .iter()
        .any(|d| d.eq_ignore_ascii_case(s))
}

/// Go's `time.ParseDuration` for the units cron schedules use (`h`, `m`, `s`, `ms`), e.g.
/// `1h30m`, `90s`, `1.5h`.
fn parse_go_duration(s: &str) -> Option<SignedDuration> {
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return None,
        };
        total += n * unit;
        rest = &rest[unit_len..];
    }
    SignedDuration::try_from_secs_f64(total).ok()
}

impl Schedule {
    /// The first activation strictly after `t` in zone `tz` (robfig's `Schedule.Next`, which
    /// works in whole seconds); `None` when the fields never match (`0 0 31 2 *`).
    pub fn next(&self, t: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        match self {
            Schedule::Every(d) => {
                // robfig: `t.Add(delay - t.Nanosecond())`, i.e. from the whole second.
                let whole = Timestamp::from_second(t.as_second()).ok()?;
                whole.checked_add(*d).ok()
            }
            Schedule::Fields(cron) => {
                let zoned = t.to_zoned(tz.clone());
                cron.find_next_occurrence(&zoned, false).ok().map(|z| z.timestamp())
            }
        }
    }
}

/// A time zone from its TZif data (the IANA name and the file's bytes).
///
/// # Errors
/// The data is not TZif.
pub fn zone_from_tzif(name: &str, data: &[u8]) -> Result<TimeZone, String> {
    TimeZone::tzif(name, data).map_err(|e| e.to_string())
}

/// Whether `name` may name a zone file (Go's `LoadLocation` refuses names that could leave
/// the zoneinfo directory).
pub fn is_zone_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('/')
        && !name.contains("..")
        && !name.contains('\\')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"/_-+".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn next(spec: &str, after: &str) -> String {
        let p = parse(spec).unwrap();
        p.schedule.next(ts(after), &TimeZone::UTC).map(|t| t.to_string()).unwrap_or_default()
    }

    #[test]
    fn standard_fields_and_descriptors() {
        assert_eq!(next("*/5 * * * *", "2026-01-01T10:02:30Z"), "2026-01-01T10:05:00Z");
        assert_eq!(next("@hourly", "2026-01-01T10:02:30Z"), "2026-01-01T11:00:00Z");
        assert_eq!(next("@midnight", "2026-01-01T10:02:30Z"), "2026-01-02T00:00:00Z");
        assert_eq!(next("@weekly", "2026-01-01T10:00:00Z"), "2026-01-04T00:00:00Z");
        assert_eq!(next("0 0 1 1 *", "2026-01-01T00:00:00Z"), "2027-01-01T00:00:00Z");
        // Day of month OR day of week when both are restricted (Vixie, robfig).
        assert_eq!(next("0 0 13 * 5", "2026-01-01T00:00:00Z"), "2026-01-02T00:00:00Z");
        assert_eq!(next("@every 90s", "2026-01-01T00:00:00.5Z"), "2026-01-01T00:01:30Z");
        assert_eq!(next("30 6-16/4 * * 1-5", "2026-01-02T15:00:00Z"), "2026-01-05T06:30:00Z");
    }

    #[test]
    fn bad_schedules_are_refused() {
        for bad in ["", "* * * *", "0 * * * * *", "@fortnightly", "61 * * * *", "@every x"] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn zone_prefix_is_split_off() {
        let p = parse("CRON_TZ=Europe/Berlin 0 9 * * *").unwrap();
        assert_eq!(p.zone.as_deref(), Some("Europe/Berlin"));
        assert!(is_zone_name("America/New_York"));
        assert!(!is_zone_name("../etc/passwd"));
    }
}
