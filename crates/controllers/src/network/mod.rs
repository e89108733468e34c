//! The controllers of Services' endpoints: [`endpoints`] keeps the `v1` Endpoints and
//! [`endpointslice`] the `discovery.k8s.io/v1` EndpointSlices of every Service with a selector,
//! as upstream's `pkg/controller/endpoint` and `pkg/controller/endpointslice` do; `services`
//! holds what both share (which pods a Service selects, their addresses and ports). Built like
//! the [`crate::apps`] controllers, whose module documentation lists the deviations from
//! upstream and what is not done.

pub mod endpoints;
pub mod endpointslice;
pub(crate) mod services;

use std::future::Future;

pub use endpoints::run_endpoints_controller;
pub use endpointslice::run_endpointslice_controller;

/// Runs the Endpoints and EndpointSlice controllers until `shutdown` completes.
///
/// # Errors
/// One of the controllers stopped (a watch stream ended); the other is stopped too.
///
/// # Caveats
/// Run one instance per cluster: there is no leader election.
pub async fn run(
    client: kube::Client,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> crate::Result<()> {
    crate::util::run_together(shutdown, |stop| async move {
        tracing::info!("endpoints controllers started");
        futures::try_join!(
            run_endpoints_controller(client.clone(), stop.wait()),
            run_endpointslice_controller(client, stop.wait()),
        )
        .map(|_| ())
    })
    .await
}
