//! The CronJob controller (upstream `pkg/controller/cronjob`, the v2 controller): a
//! kube-runtime `Controller` of `batch/v1` CronJobs owning Jobs. A pass keeps
//! `status.active` and `lastSuccessfulTime` in step with the Jobs it controls, creates the Job
//! of the most recent due schedule time unless the concurrency policy or the starting deadline
//! says otherwise, deletes finished Jobs beyond the history limits and requeues itself for just
//! after the next scheduled time. The decisions are [`decide`]'s pure functions; `timeZone`
//! (or UTC) comes from the system zoneinfo as Go's `time.LoadLocation` reads it.

pub mod decide;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::jiff::tz::TimeZone;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams, PropagationPolicy};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;

use crate::backoff::Backoff;
use crate::events::{EventReq, EventSink};
use crate::util::{SyncError, controller_of, controller_ref, is_deleting, name_of, ns_of, uid_of};

/// The controller's name in Events.
pub const COMPONENT: &str = "cronjob-controller";

/// Runs the CronJob controller until `shutdown` completes.
///
/// # Errors
/// None so far: API errors are retried per CronJob with back-off.
pub async fn run(
    client: Client,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> crate::Result<()> {
    crate::util::run_together(shutdown, |stop| async move {
        let (jobs, job_changes) =
            crate::util::reflect_changes::<Job>(&client, watcher::Config::default());
        let controller =
            Controller::new(Api::<CronJob>::all(client.clone()), watcher::Config::default());
        let ctx = Arc::new(Ctx {
            client: client.clone(),
            jobs,
            events: EventSink::spawn(client, COMPONENT.to_owned()),
            backoff: Backoff::default(),
        });
        tracing::info!("cronjob controller started");
        controller
            .owns_stream(job_changes)
            .graceful_shutdown_on(stop.wait())
            .run(reconcile, error_policy, ctx)
            .for_each(crate::log_reconcile("cronjob"))
            .await;
        Ok(())
    })
    .await
}

struct Ctx {
    client: Client,
    jobs: Store<Job>,
    events: EventSink,
    backoff: Backoff,
}

async fn reconcile(cj: Arc<CronJob>, ctx: Arc<Ctx>) -> Result<Action, SyncError> {
    let pass = async {
        let requeue = ctx.sync(&cj).await?;
        Ok(requeue.map_or_else(Action::await_change, Action::requeue))
    };
    ctx.backoff.reconcile(&*cj, pass).await
}

fn error_policy(cj: Arc<CronJob>, e: &SyncError, ctx: Arc<Ctx>) -> Action {
    ctx.backoff.retry(&*cj, e)
}

/// The zone `name` from the system's zoneinfo (`UTC` needs no file).
fn load_zone(name: &str) -> Option<TimeZone> {
    if name == "UTC" {
        return Some(TimeZone::UTC);
    }
    if !kinetic_machinery::cron::is_zone_name(name) {
        return None;
    }
    let data = std::fs::read(std::path::Path::new("/usr/share/zoneinfo").join(name)).ok()?;
    kinetic_machinery::cron::zone_from_tzif(name, &data).ok()
}

impl Ctx {
    fn event(&self, cj: &CronJob, (type_, reason, msg): (&'static str, &'static str, String)) {
        self.events.send(EventReq::for_object(cj, type_, reason, msg));
    }

    #[tracing::instrument(skip_all, fields(cronjob = %format!("{}/{}", ns_of(cj), name_of(cj))))]
    async fn sync(&self, cj: &CronJob) -> Result<Option<Duration>, SyncError> {
        if !crate::cache_ready(&self.jobs) {
            return Ok(Some(Duration::from_millis(200)));
        }
        let uid = uid_of(cj);
        let all = self.jobs.state();
        let mine: Vec<&Job> = all
            .iter()
            .map(|j| &**j)
            .filter(|j| ns_of(*j) == ns_of(cj))
            .filter(|j| controller_of(*j).is_some_and(|c| c.uid == uid))
            .collect();
        let mut next = cj.clone();
        let (events, missing) = decide::reconcile_active(&mut next, &mine);
        for e in events {
            self.event(cj, e);
        }
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), ns_of(cj));
        for m in missing {
            let name = m.name.clone().unwrap_or_default();
            // The cache may lag behind a Job just created: only a 404 takes it off the list.
            match jobs.get_opt(&name).await.map_err(SyncError::api("reading an active job"))? {
                Some(_) => {}
                None => {
                    self.event(
                        cj,
                        ("Normal", "MissingJob", format!("Active job went missing: {name}")),
                    );
                    let st = next.status.get_or_insert_with(Default::default);
                    if let Some(a) = st.active.as_mut() {
                        a.retain(|r| r.uid != m.uid);
                    }
                    if st.active.as_ref().is_some_and(Vec::is_empty) {
                        st.active = None;
                    }
                }
            }
        }
        let mut requeue = None;
        if !is_deleting(cj) {
            requeue = self.schedule(&mut next, &jobs).await?;
        }
        for name in decide::over_history(&next, &mine) {
            let dp = DeleteParams {
                propagation_policy: Some(PropagationPolicy::Background),
                ..DeleteParams::default()
            };
            match jobs.delete(&name, &dp).await {
                Ok(_) => {
                    self.event(cj, ("Normal", "SuccessfulDelete", format!("Deleted job {name}")))
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(SyncError::api("deleting a finished job")(e)),
            }
        }
        if !crate::util::sem_eq(&cj.status, &next.status, true) {
            Api::<CronJob>::namespaced(self.client.clone(), ns_of(cj))
                .replace_status(name_of(cj), &PostParams::default(), &next)
                .await
                .map_err(SyncError::api("updating the cronjob status"))?;
        }
        Ok(requeue)
    }

    /// The scheduling half of `syncCronJob`: time zone and schedule, then [`decide::decide`],
    /// then the Job (and for `Replace` the deletion of the running ones).
    async fn schedule(
        &self,
        cj: &mut CronJob,
        jobs: &Api<Job>,
    ) -> Result<Option<Duration>, SyncError> {
        let spec = cj.spec.clone().unwrap_or_default();
        let parsed = match kinetic_machinery::cron::parse(&spec.schedule) {
            Ok(p) => p,
            Err(e) => {
                let msg = format!("unparseable schedule: {:?} : {e}", spec.schedule);
                self.event(cj, ("Warning", "UnparseableSchedule", msg));
                return Ok(None);
            }
        };
        let zone_name = spec.time_zone.clone().or(parsed.zone.clone());
        let tz = match zone_name.as_deref() {
            None => TimeZone::UTC,
            Some(name) => match load_zone(name) {
                Some(tz) => tz,
                None => {
                    let msg = format!("invalid timeZone: {name:?}: unknown time zone {name}");
                    self.event(cj, ("Warning", "UnknownTimeZone", msg));
                    return Ok(None);
                }
            },
        };
        let now = Timestamp::now();
        let d = decide::decide(cj, now, &parsed.schedule, &tz);
        for e in d.events.clone() {
            self.event(cj, e);
        }
        let Some(scheduled) = d.create_for else { return Ok(d.requeue) };
        for r in &d.replace {
            let name = r.name.clone().unwrap_or_default();
            let dp = DeleteParams {
                propagation_policy: Some(PropagationPolicy::Background),
                ..DeleteParams::default()
            };
            match jobs.delete(&name, &dp).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(SyncError::api("replacing a running job")(e)),
            }
            self.event(cj, ("Normal", "SuccessfulDelete", format!("Deleted job {name}")));
            let st = cj.status.get_or_insert_with(Default::default);
            if let Some(a) = st.active.as_mut() {
                a.retain(|x| x.uid != r.uid);
            }
        }
        let job = decide::job_for(cj, controller_ref(&*cj), scheduled, &tz);
        let created = match jobs.create(&PostParams::default(), &job).await {
            Ok(j) => {
                let msg = format!("Created job {}", name_of(&j));
                self.events.send(EventReq::for_object(&*cj, "Normal", "SuccessfulCreate", msg));
                j
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                // Made by an earlier pass whose status write was lost: take it if it is ours.
                let name = job.metadata.name.clone().unwrap_or_default();
                match jobs.get_opt(&name).await.map_err(SyncError::api("reading a job"))? {
                    Some(j) if controller_of(&j).is_some_and(|c| c.uid == uid_of(&*cj)) => j,
                    _ => return Ok(d.requeue),
                }
            }
            Err(e) => {
                let msg = format!("Error creating job: {e}");
                self.events.send(EventReq::for_object(&*cj, "Warning", "FailedCreate", msg));
                return Err(SyncError::api("creating a job")(e));
            }
        };
        let st = cj.status.get_or_insert_with(Default::default);
        let active = st.active.get_or_insert_with(Vec::new);
        if !active.iter().any(|a| a.uid == created.metadata.uid) {
            active.push(decide::reference(&created));
        }
        st.last_schedule_time = Some(decide::scheduled_time(scheduled));
        Ok(d.requeue)
    }
}
