//! What the Endpoints and EndpointSlice controllers share (upstream
//! `staging/src/k8s.io/endpointslice/util` and `pkg/api/v1/pod`): which pods a Service selects,
//! which of them get an endpoint, their IPv4 address and the ports a Service port resolves to.

use k8s_openapi::api::core::v1::{Pod, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use kube::runtime::reflector::{ObjectRef, Store};

use crate::util::{Labels, ns_of};

/// Upstream `v1.IsHeadlessService`.
pub(crate) const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// The Service's selector, if the controllers manage its endpoints (not `ExternalName`, and a
/// selector is set: Services without one have user-managed endpoints).
pub(crate) fn managed_selector(svc: &Service) -> Option<&Labels> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    spec.selector.as_ref()
}

/// A map selector matches labels that contain all its pairs (an empty one matches all).
pub(crate) fn selects(selector: &Labels, labels: Option<&Labels>) -> bool {
    selector.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// The Services in the pod's namespace whose selector matches its labels: what a pod change
/// concerns (upstream's pod event handlers; the pod's previous version comes through
/// `crate::util::reflect_changes` when its labels changed).
pub(crate) fn services_selecting(services: &Store<Service>, pod: &Pod) -> Vec<ObjectRef<Service>> {
    services
        .state()
        .iter()
        .filter(|svc| ns_of(&***svc) == ns_of(pod))
        .filter(|svc| {
            managed_selector(svc).is_some_and(|sel| selects(sel, pod.metadata.labels.as_ref()))
        })
        .map(|svc| ObjectRef::from_obj(&**svc))
        .collect()
}

/// Upstream `IsServiceIPSet`: a ClusterIP that is neither empty nor `None`.
pub(crate) fn is_service_ip_set(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .is_some_and(|ip| !ip.is_empty() && ip != "None")
}

/// The pod's IPv4 address (`status.podIPs`, else `status.podIP`).
pub(crate) fn pod_ipv4(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    let from_list = status.pod_ips.iter().flatten().map(|p| p.ip.as_str());
    from_list
        .chain(status.pod_ip.as_deref())
        .find(|ip| !ip.is_empty() && !ip.contains(':'))
        .map(str::to_owned)
}

/// Upstream `ShouldPodBeInEndpoints`: not finished, has an IP, and not terminating unless
/// `include_terminating`.
pub(crate) fn should_pod_be_in_endpoints(pod: &Pod, include_terminating: bool) -> bool {
    if matches!(crate::apps::pods::phase(pod), "Succeeded" | "Failed") {
        return false;
    }
    if pod_ipv4(pod).is_none() {
        return false;
    }
    include_terminating || pod.metadata.deletion_timestamp.is_none()
}

/// Upstream `ShouldSetHostname`: the pod asked for a hostname under this Service's subdomain.
pub(crate) fn hostname_for(pod: &Pod, svc: &Service) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let hostname = spec.hostname.as_deref().filter(|h| !h.is_empty())?;
    let same =
        spec.subdomain.as_deref() == svc.metadata.name.as_deref() && ns_of(pod) == ns_of(svc);
    same.then(|| hostname.to_owned())
}

/// Upstream `podutil.FindPort`: a numeric targetPort as is, a named one resolved against the
/// ports of the pod's containers (and restartable init containers) with the same protocol.
pub(crate) fn find_port(pod: &Pod, port: &ServicePort) -> Option<i32> {
    let target = port.target_port.clone().unwrap_or(IntOrString::Int(port.port));
    match target {
        IntOrString::Int(n) => Some(n),
        IntOrString::String(name) => {
            let protocol = port.protocol.as_deref().unwrap_or("TCP");
            let spec = pod.spec.as_ref()?;
            let sidecars = spec
                .init_containers
                .iter()
                .flatten()
                .filter(|c| c.restart_policy.as_deref() == Some("Always"));
            spec.containers.iter().chain(sidecars).flat_map(|c| c.ports.iter().flatten()).find_map(
                |p| {
                    (p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol)
                        .then_some(p.container_port)
                },
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, ContainerPort, PodSpec};

    #[test]
    fn named_target_ports_resolve_against_container_ports() {
        let pod = Pod {
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "web".into(),
                    ports: Some(vec![ContainerPort {
                        name: Some("http".into()),
                        container_port: 8080,
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let port = |target: IntOrString, protocol: &str| ServicePort {
            port: 80,
            target_port: Some(target),
            protocol: Some(protocol.into()),
            ..Default::default()
        };
        assert_eq!(find_port(&pod, &port(IntOrString::String("http".into()), "TCP")), Some(8080));
        assert_eq!(find_port(&pod, &port(IntOrString::String("http".into()), "UDP")), None);
        assert_eq!(find_port(&pod, &port(IntOrString::String("grpc".into()), "TCP")), None);
        assert_eq!(find_port(&pod, &port(IntOrString::Int(9000), "TCP")), Some(9000));
    }
}
