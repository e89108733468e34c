//! Table tests after upstream's `TestControllerV2SyncCronJob` and `TestMostRecentScheduleTime`
//! (cronjob_controllerv2_test.go, utils_test.go): an hourly schedule, a CronJob created the
//! hour before, and the clock at chosen points.

use k8s_openapi::api::batch::v1::CronJob;
use serde_json::json;

use super::*;

const ON_THE_HOUR: &str = "0 * * * *";

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn sched(s: &str) -> Schedule {
    kinetic_machinery::cron::parse(s).unwrap().schedule
}

fn cj(spec: serde_json::Value, status: serde_json::Value) -> CronJob {
    let mut s = json!({"schedule": ON_THE_HOUR, "concurrencyPolicy": "Allow", "suspend": false,
        "jobTemplate": {"spec": {"template": {"spec": {"containers": []}}}}});
    for (k, v) in spec.as_object().unwrap() {
        s[k] = v.clone();
    }
    serde_json::from_value(json!({"metadata": {"name": "mycronjob", "namespace": "default",
        "creationTimestamp": "2016-05-19T08:30:00Z"}, "spec": s, "status": status}))
    .unwrap()
}

fn active() -> serde_json::Value {
    json!({"active": [{"name": "mycronjob-24394080", "uid": "1"}],
           "lastScheduleTime": "2016-05-19T08:00:00Z"})
}

fn summary(d: &Decision) -> String {
    let events: Vec<&str> = d.events.iter().map(|e| e.1).collect();
    format!(
        "create={} replace={} events={:?} requeue={:?}",
        d.create_for.map(|t| t.to_string()).unwrap_or_default(),
        d.replace.len(),
        events,
        d.requeue,
    )
}

#[test]
fn sync_cron_job_cases() {
    let before = "2016-05-19T08:59:00Z";
    let just_after = "2016-05-19T09:00:10Z";
    let cases: Vec<(&str, CronJob, &str, &str)> = vec![
        (
            "never ran, not time",
            cj(json!({}), json!({})),
            before,
            "create= replace=0 events=[] requeue=Some(60.1s)",
        ),
        (
            "never ran, is time",
            cj(json!({}), json!({})),
            just_after,
            "create=2016-05-19T09:00:00Z replace=0 events=[] requeue=Some(3590.1s)",
        ),
        (
            "suspended: nothing",
            cj(json!({"suspend": true}), json!({})),
            just_after,
            "create= replace=0 events=[] requeue=None",
        ),
        (
            "Allow with an active job: another",
            cj(json!({}), active()),
            just_after,
            "create=2016-05-19T09:00:00Z replace=0 events=[] requeue=Some(3590.1s)",
        ),
        (
            "Forbid with an active job: none",
            cj(json!({"concurrencyPolicy": "Forbid"}), active()),
            just_after,
            "create= replace=0 events=[\"JobAlreadyActive\"] requeue=Some(3590.1s)",
        ),
        (
            "Replace with an active job: replaced",
            cj(json!({"concurrencyPolicy": "Replace"}), active()),
            just_after,
            "create=2016-05-19T09:00:00Z replace=1 events=[] requeue=Some(3590.1s)",
        ),
        (
            // The look-back stops at the deadline: the missed time is not even considered.
            "starting deadline passed",
            cj(json!({"startingDeadlineSeconds": 5}), json!({})),
            just_after,
            "create= replace=0 events=[] requeue=Some(3590.1s)",
        ),
        (
            "starting deadline not passed",
            cj(json!({"startingDeadlineSeconds": 20}), json!({})),
            just_after,
            "create=2016-05-19T09:00:00Z replace=0 events=[] requeue=Some(3590.1s)",
        ),
        (
            "this hour already scheduled",
            cj(json!({}), json!({"lastScheduleTime": "2016-05-19T09:00:00Z"})),
            "2016-05-19T09:30:00Z",
            "create= replace=0 events=[] requeue=Some(1800.1s)",
        ),
        (
            "missed a few: the most recent only",
            cj(json!({}), json!({"lastScheduleTime": "2016-05-19T09:00:00Z"})),
            "2016-05-19T12:10:00Z",
            "create=2016-05-19T12:00:00Z replace=0 events=[] requeue=Some(3000.1s)",
        ),
        (
            "missed too many: warned, the most recent still created",
            cj(json!({}), json!({})),
            "2016-06-19T12:10:00Z",
            "create=2016-06-19T12:00:00Z replace=0 events=[\"TooManyMissedTimes\"] requeue=Some(3000.1s)",
        ),
        (
            "missed many but a deadline bounds the look-back: no warning",
            cj(json!({"startingDeadlineSeconds": 3600}), json!({})),
            "2016-06-19T12:10:00Z",
            "create=2016-06-19T12:00:00Z replace=0 events=[] requeue=Some(3000.1s)",
        ),
        (
            "a schedule that never fires",
            cj(json!({"schedule": "59 23 31 2 *"}), json!({})),
            just_after,
            "create= replace=0 events=[\"InvalidSchedule\"] requeue=None",
        ),
    ];
    for (name, c, now, want) in cases {
        let s = sched(&c.spec.as_ref().unwrap().schedule);
        let got = summary(&decide(&c, t(now), &s, &TimeZone::UTC));
        assert_eq!(got, want, "case {name:?}");
    }
}

#[test]
fn most_recent_schedule_time_cases() {
    let cases = [
        // (schedule, last schedule, now, most recent, missed)
        ("0 * * * *", "2016-05-19T09:00:00Z", "2016-05-19T09:30:00Z", None, Missed::None),
        (
            "0 * * * *",
            "2016-05-19T09:00:00Z",
            "2016-05-19T10:00:00Z",
            Some("2016-05-19T10:00:00Z"),
            Missed::None,
        ),
        (
            "0 * * * *",
            "2016-05-19T09:00:00Z",
            "2016-05-19T14:30:00Z",
            Some("2016-05-19T14:00:00Z"),
            Missed::Few,
        ),
        (
            "30 6-16/4 * * 1-5",
            "2016-05-19T10:30:00Z",
            "2016-05-23T07:00:00Z",
            Some("2016-05-23T06:30:00Z"),
            Missed::Few,
        ),
        (
            "@every 1h",
            "2016-05-19T09:00:00Z",
            "2016-05-19T12:10:00Z",
            Some("2016-05-19T12:00:00Z"),
            Missed::Few,
        ),
        (
            "*/1 * * * *",
            "2016-05-19T09:00:00Z",
            "2016-05-19T11:00:00Z",
            Some("2016-05-19T11:00:00Z"),
            Missed::Many,
        ),
    ];
    for (s, last, now, want, missed) in cases {
        let c = cj(json!({"schedule": s}), json!({"lastScheduleTime": last}));
        let (_, got, m) =
            most_recent_schedule_time(&c, t(now), &sched(s), &TimeZone::UTC, false).unwrap();
        assert_eq!(got.map(|t| t.to_string()).as_deref(), want, "{s} at {now}");
        assert_eq!(m, missed, "{s} at {now}");
    }
}

#[test]
fn jobs_are_named_by_minute_and_stamped_in_the_zone() {
    let c = cj(json!({}), json!({}));
    assert_eq!(job_name("mycronjob", t("2016-05-19T09:00:00Z")), "mycronjob-24394140");
    let owner = Default::default();
    let j = job_for(&c, owner, t("2016-05-19T09:00:00Z"), &TimeZone::UTC);
    assert_eq!(j.metadata.annotations.unwrap()[SCHEDULED_TIMESTAMP], "2016-05-19T09:00:00Z");
    let tz = TimeZone::fixed(k8s_openapi::jiff::tz::offset(-4));
    let j = job_for(&c, Default::default(), t("2016-05-19T09:00:00Z"), &tz);
    assert_eq!(j.metadata.annotations.unwrap()[SCHEDULED_TIMESTAMP], "2016-05-19T05:00:00-04:00");
}

#[test]
fn finished_jobs_leave_the_active_list_and_the_history_is_trimmed() {
    let job = |name: &str, uid: &str, cond: Option<&str>, start: &str| -> Job {
        let conds = cond.map(|c| json!([{"type": c, "status": "True"}])).unwrap_or(json!([]));
        serde_json::from_value(json!({"metadata": {"name": name, "uid": uid},
            "status": {"conditions": conds, "startTime": start,
                       "completionTime": if cond == Some("Complete") { json!(start) } else { json!(null) }}}))
        .unwrap()
    };
    let mut c = cj(
        json!({"successfulJobsHistoryLimit": 1, "failedJobsHistoryLimit": 0}),
        json!({"active": [{"name": "a", "uid": "1"}, {"name": "gone", "uid": "9"}]}),
    );
    let jobs = [
        job("a", "1", Some("Complete"), "2016-05-19T09:00:00Z"),
        job("b", "2", Some("Complete"), "2016-05-19T08:00:00Z"),
        job("c", "3", Some("Failed"), "2016-05-19T07:00:00Z"),
        job("d", "4", None, "2016-05-19T10:00:00Z"),
    ];
    let refs: Vec<&Job> = jobs.iter().collect();
    let (events, missing) = reconcile_active(&mut c, &refs);
    let reasons: Vec<&str> = events.iter().map(|e| e.1).collect();
    assert_eq!(reasons, ["SawCompletedJob", "UnexpectedJob"]);
    assert_eq!(missing.iter().map(|m| m.name.clone().unwrap()).collect::<Vec<_>>(), ["gone"]);
    let st = c.status.clone().unwrap();
    assert_eq!(st.active.unwrap().len(), 1, "only the missing one is left to check");
    assert_eq!(st.last_successful_time.unwrap().0, t("2016-05-19T09:00:00Z"));
    assert_eq!(over_history(&c, &refs), ["b", "c"]);
}
