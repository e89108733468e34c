//! Server-side printing: the `meta.k8s.io/v1` `Table` kube-apiserver returns for
//! `Accept: application/json;as=Table;g=meta.k8s.io;v=v1`, which is what `kubectl get` prints.
//!
//! - [`columns`] and [`cells`] are the built-in kinds' printers, ported from kube-apiserver's
//!   `pkg/printers/internalversion/printers.go` (column names, types, formats, priorities and
//!   descriptions as upstream; cells computed from the object's JSON the way upstream computes
//!   them from the typed object). Like kube-apiserver, which always generates with
//!   `GenerateOptions{Wide: true}`, every row carries the wide (`priority: 1`) cells too and
//!   kubectl hides them unless `-o wide`.
//! - [`custom_columns`] and [`custom_cells`] are the CustomResourceDefinition printer
//!   (`apiextensions-apiserver`'s `tableconvertor`): `Name`, then the version's
//!   `additionalPrinterColumns` evaluated as simple JSONPaths.
//! - [`table`] assembles the `Table` object; [`human_duration`] is upstream's
//!   `duration.HumanDuration`, used for every `AGE`-style cell.
//!
//! Cells are JSON values: strings, numbers, booleans, or `null` where upstream has `nil`.
//! Everything is a function of its inputs; the current time is passed in as `now`.
//!
//! What it does not do: `includeObject` handling (the caller passes the row object it wants
//! embedded), row `conditions` (upstream marks succeeded and failed pods with a `Completed`
//! row condition; [`table`] emits none), and sorting.

mod hpa;
mod pdb;

use std::collections::BTreeSet;

use jiff::{SignedDuration, Timestamp};
use serde_json::{Map, Value, json};

use crate::selector::LabelSelector;

// Descriptions upstream takes from the API types' swagger docs (`SwaggerDoc()`), here the
// v1 types' field descriptions.
const D_META_NAME: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const D_META_CREATION: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
const D_POD_IP: &str = "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.";
const D_POD_NOMINATED: &str = "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods. This field does not guarantee that the pod will be scheduled on this node. Scheduler may decide to place the pod elsewhere if other nodes become available sooner. Scheduler may also decide to give the resources on this node to a higher priority pod that is created after preemption. As a result, this field may be different than PodSpec.nodeName when the pod is scheduled.";
const D_POD_NODE: &str = "NodeName indicates in which node this pod is scheduled. If empty, this pod is a candidate for scheduling by the scheduler defined in schedulerName. Once this field is set, the kubelet for this node becomes responsible for the lifecycle of this pod. This field should not be used to express a desire for the pod to be scheduled on a specific node. https://kubernetes.io/docs/concepts/scheduling-eviction/assign-pod-node/#nodename";
const D_POD_GATES: &str = "If specified, all readiness gates will be evaluated for pod readiness. A pod is ready when all its containers are ready AND all conditions specified in the readiness gates have status equal to \"True\" More info: https://git.k8s.io/enhancements/keps/sig-network/580-pod-readiness-gates";
const D_POD_NODESELECTOR: &str = "NodeSelector is a selector which must be true for the pod to fit on a node. Selector which must match a node's labels for the pod to be scheduled on that node. More info: https://kubernetes.io/docs/concepts/configuration/assign-pod-node/";
const D_NODE_KUBELET: &str = "Kubelet Version reported by the node.";
const D_NODE_OS: &str =
    "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).";
const D_NODE_KERNEL: &str =
    "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).";
const D_NODE_RUNTIME: &str = "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).";
const D_NODE_ADDRESSES: &str = "List of addresses reachable to the node. Queried from cloud provider, if available. More info: https://kubernetes.io/docs/reference/node/node-status/#addresses Note: This field is declared as mergeable, but the merge key is not sufficiently unique, which can cause data corruption when it is merged. Callers should instead use a full-replacement patch. See https://pr.k8s.io/79391 for an example. Consumers should assume that addresses can change during the lifetime of a Node. However, there are some exceptions where this may not be possible, such as Pods that inherit a Node's address in its own status or consumers of the downward API (status.hostIP).";
const D_EV_LAST: &str = "The time at which the most recent occurrence of this event was recorded.";
const D_EV_TYPE: &str =
    "Type of this event (Normal, Warning), new types could be added in the future";
const D_EV_REASON: &str = "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.";
const D_EV_OBJECT: &str = "The object that this event is about.";
const D_EV_SOURCE: &str =
    "The component reporting this event. Should be a short machine understandable string.";
const D_EV_MESSAGE: &str = "A human-readable description of the status of this operation.";
const D_EV_FIRST: &str =
    "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)";
const D_EV_COUNT: &str = "The number of times this event has occurred.";
const D_OBJREF_FIELDPATH: &str = "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2]. For example, if the object reference is to a container within a pod, this would take on a value like: \"spec.containers{name}\" (where \"name\" refers to the name of the container that triggered the event) or if no container name is specified \"spec.containers[2]\" (container with index 2 in this pod). This syntax is chosen only to have some well-defined way of referencing a part of an object.";
const D_SECRET_TYPE: &str = "Used to facilitate programmatic handling of secret data. More info: https://kubernetes.io/docs/concepts/configuration/secret/#secret-types";
const D_SECRET_DATA: &str = "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'. The serialized form of the secret data is a base64 encoded string, representing the arbitrary (possibly non-string) data value here. Described in https://tools.ietf.org/html/rfc4648#section-4";
const D_SA_SECRETS: &str = "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use. Pods are only limited to this list if this service account has a \"kubernetes.io/enforce-mountable-secrets\" annotation set to \"true\". The \"kubernetes.io/enforce-mountable-secrets\" annotation is deprecated since v1.32. Prefer separate namespaces to isolate access to mounted secrets. This field should not be used to find auto-generated service account token secrets for use outside of pods. Instead, tokens can be requested directly using the TokenRequest API, or service account token secrets can be manually created. More info: https://kubernetes.io/docs/concepts/configuration/secret";
const D_CM_DATA: &str = "Data contains the configuration data. Each key must consist of alphanumeric characters, '-', '_' or '.'. Values with non-UTF-8 byte sequences must use the BinaryData field. The keys stored in Data must not overlap with the keys in the BinaryData field, this is enforced during validation process.";
const D_EP_SUBSETS: &str = "The set of all endpoints is the union of all subsets. Addresses are placed into subsets according to the IPs they share. A single address with multiple ports, some of which are ready and some of which are not (because they come from different containers) will result in the address being displayed in different subsets for the different ports. No address will appear in both Addresses and NotReadyAddresses in the same subset. Sets of addresses and ports that comprise a service.";
const D_SVC_TYPE: &str = "type determines how the Service is exposed. Defaults to ClusterIP. Valid options are ExternalName, ClusterIP, NodePort, and LoadBalancer. \"ClusterIP\" allocates a cluster-internal IP address for load-balancing to endpoints. Endpoints are determined by the selector or if that is not specified, by manual construction of an Endpoints object or EndpointSlice objects. If clusterIP is \"None\", no virtual IP is allocated and the endpoints are published as a set of endpoints rather than a virtual IP. \"NodePort\" builds on ClusterIP and allocates a port on every node which routes to the same endpoints as the clusterIP. \"LoadBalancer\" builds on NodePort and creates an external load-balancer (if supported in the current cloud) which routes to the same endpoints as the clusterIP. \"ExternalName\" aliases this service to the specified externalName. Several other fields do not apply to ExternalName services. More info: https://kubernetes.io/docs/concepts/services-networking/service/#publishing-services-service-types";
const D_SVC_CLUSTERIP: &str = "clusterIP is the IP address of the service and is usually assigned randomly. If an address is specified manually, is in-range (as per system configuration), and is not in use, it will be allocated to the service; otherwise creation of the service will fail. This field may not be changed through updates unless the type field is also being changed to ExternalName (which requires this field to be blank) or the type field is being changed from ExternalName (in which case this field may optionally be specified, as describe above).  Valid values are \"None\", empty string (\"\"), or a valid IP address. Setting this to \"None\" makes a \"headless service\" (no virtual IP), which is useful when direct endpoint connections are preferred and proxying is not required.  Only applies to types ClusterIP, NodePort, and LoadBalancer. If this field is specified when creating a Service of type ExternalName, creation will fail. This field will be wiped when updating a Service to type ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies";
const D_SVC_EXTERNALIPS: &str = "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.  These IPs are not managed by Kubernetes.  The user is responsible for ensuring that traffic arrives at a node with this IP.  A common example is external load-balancers that are not part of the Kubernetes system.";
const D_SVC_PORTS: &str = "The list of ports that are exposed by this service. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies";
const D_SVC_SELECTOR: &str = "Route service traffic to pods with label keys and values matching this selector. If empty or not present, the service is assumed to have an external process managing its endpoints, which Kubernetes will not modify. Only applies to types ClusterIP, NodePort, and LoadBalancer. Ignored if type is ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/";
const D_DEP_UPDATED: &str = "Total number of non-terminating pods targeted by this deployment that have the desired template spec.";
const D_DEP_AVAILABLE: &str = "Total number of available non-terminating pods (ready for at least minReadySeconds) targeted by this deployment.";
const D_DEP_SELECTOR: &str = "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment. It must match the pod template's labels.";
const D_RS_SPEC_REPLICAS: &str = "Replicas is the number of desired pods. This is a pointer to distinguish between explicit zero and unspecified. Defaults to 1. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicaset";
const D_RS_SELECTOR: &str = "Selector is a label query over pods that should match the replica count. Label keys and values that must match in order to be controlled by this replica set. It must match the pod template's labels. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors";
const D_RS_REPLICAS: &str = "Replicas is the most recently observed number of non-terminating pods. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicaset";
const D_RS_READY: &str =
    "The number of non-terminating pods targeted by this ReplicaSet with a Ready Condition.";
const D_DS_DESIRED: &str = "The total number of nodes that should be running the daemon pod (including nodes correctly running the daemon pod). More info: https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/";
const D_DS_CURRENT: &str = "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod. More info: https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/";
const D_DS_READY: &str = "numberReady is the number of nodes that should be running the daemon pod and have one or more of the daemon pod running with a Ready Condition.";
const D_DS_UPDATED: &str = "The total number of nodes that are running updated daemon pod";
const D_DS_AVAILABLE: &str = "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available (ready for at least spec.minReadySeconds)";
const D_DS_SELECTOR: &str = "A label query over pods that are managed by the daemon set. Must match in order to be controlled. It must match the pod template's labels. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors";
const D_JOB_SUCCEEDED: &str = "The number of pods which reached phase Succeeded. The value increases monotonically for a given spec. However, it may decrease in reaction to scale down of elastic indexed jobs.";
const D_JOB_SELECTOR: &str = "A label query over pods that should match the pod count. Normally, the system sets this field for you. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors";
const D_CJ_SCHEDULE: &str = "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron.";
const D_CJ_TZ: &str = "The time zone name for the given schedule, see https://en.wikipedia.org/wiki/List_of_tz_database_time_zones. If not specified, this will default to the time zone of the kube-controller-manager process. The set of valid time zone names and the time zone offset is loaded from the system-wide time zone database by the API server during CronJob validation and the controller manager during execution. If no system-wide time zone database can be found a bundled version of the database is used instead. If the time zone name becomes invalid during the lifetime of a CronJob or due to a change in host configuration, the controller will stop creating new new Jobs and will create a system event with the reason UnknownTimeZone. More information can be found in https://kubernetes.io/docs/concepts/workloads/controllers/cron-jobs/#time-zones";
const D_CJ_SUSPEND: &str = "This flag tells the controller to suspend subsequent executions, it does not apply to already started executions.  Defaults to false.";
const D_CJ_ACTIVE: &str = "A list of pointers to currently running jobs.";
const D_CJ_LAST: &str = "Information when was the last time the job was successfully scheduled.";
const D_LEASE_HOLDER: &str = "holderIdentity contains the identity of the holder of a current lease. If Coordinated Leader Election is used, the holder identity must be equal to the elected LeaseCandidate.metadata.name field.";
const D_CR_REVISION: &str = "Revision indicates the revision of the state represented by Data.";
const D_EPS_ADDRTYPE: &str = "addressType specifies the type of address carried by this EndpointSlice. All addresses in this slice must be the same type. This field is immutable after creation. The following address types are currently supported: * IPv4: Represents an IPv4 Address. * IPv6: Represents an IPv6 Address. * FQDN: Represents a Fully Qualified Domain Name. (Deprecated) The EndpointSlice controller only generates, and kube-proxy only processes, slices of addressType \"IPv4\" and \"IPv6\". No semantics are defined for the \"FQDN\" type.";
const D_EPS_PORTS: &str = "ports specifies the list of network ports exposed by each endpoint in this slice. Each port must have a unique name. Each slice may include a maximum of 100 ports. Services always have at least 1 port, so EndpointSlices generated by the EndpointSlice controller will likewise always have at least 1 port. EndpointSlices used for other purposes may have an empty ports list.";
const D_EPS_ENDPOINTS: &str = "endpoints is a list of unique endpoints in this slice. Each slice may include a maximum of 1000 endpoints.";

/// One table column: `metav1.TableColumnDefinition` plus, for custom resources, the JSONPath
/// that computes its cells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// The OpenAPI type: `string`, `integer`, `number`, `boolean` or `date`.
    pub type_: String,
    /// `name` for the column holding the object's name, otherwise usually empty.
    pub format: String,
    pub description: String,
    /// 0 is always shown; 1 and above only with `kubectl get -o wide`.
    pub priority: i32,
    /// For [`custom_cells`]: a CRD column's `jsonPath`; `None` is the object's name.
    pub json_path: Option<String>,
}

impl Column {
    fn new(name: &str, type_: &str, description: &str) -> Self {
        Self {
            name: name.to_owned(),
            type_: type_.to_owned(),
            format: String::new(),
            description: description.to_owned(),
            priority: 0,
            json_path: None,
        }
    }

    fn string(name: &str, description: &str) -> Self {
        Self::new(name, "string", description)
    }

    fn integer(name: &str, description: &str) -> Self {
        Self::new(name, "integer", description)
    }

    fn wide(mut self) -> Self {
        self.priority = 1;
        self
    }

    fn name() -> Self {
        let mut c = Self::string("Name", D_META_NAME);
        c.format = "name".to_owned();
        c
    }

    fn age() -> Self {
        Self::string("Age", D_META_CREATION)
    }
}

const D_PV_ACCESS: &str = "The access modes of the volume.";
const D_PV_CLASS: &str = "The StorageClass of the volume.";
const D_PV_VAC: &str = "The VolumeAttributesClass of the volume.";
const D_PV_MODE: &str = "Whether the volume is a filesystem or a raw block device.";
const D_POD_READY: &str = "The aggregate readiness state of this pod for accepting traffic.";
const D_POD_STATUS: &str = "The aggregate status of the containers in this pod.";
const D_POD_RESTARTS: &str = "The number of times the containers in this pod have been restarted \
                              and when the last container in this pod has restarted.";
const D_CONTAINERS: &str = "Names of each container in the template.";
const D_IMAGES: &str = "Images referenced by each container in the template.";
const D_WORKLOAD_READY: &str = "Number of the pod with ready state";

fn containers_and_images() -> [Column; 2] {
    [Column::string("Containers", D_CONTAINERS).wide(), Column::string("Images", D_IMAGES).wide()]
}

/// The columns kube-apiserver prints for a kind, in order. `group` is the API group (`""` for
/// the core group). Kinds without a printer here get `Name` and `Age`.
///
/// Column types follow upstream even where its cells disagree (for example Secret `Data` is
/// declared `string` and holds an integer), since kubectl prints what the cell holds.
pub fn columns(group: &str, kind: &str) -> Vec<Column> {
    let name = Column::name();
    let age = Column::age();
    match (group, kind) {
        ("", "Pod") => vec![
            name,
            Column::string("Ready", D_POD_READY),
            Column::string("Status", D_POD_STATUS),
            Column::string("Restarts", D_POD_RESTARTS),
            age,
            Column::string("IP", D_POD_IP).wide(),
            Column::string("Node", D_POD_NODE).wide(),
            Column::string("Nominated Node", D_POD_NOMINATED).wide(),
            Column::string("Readiness Gates", D_POD_GATES).wide(),
        ],
        ("", "Node") => vec![
            name,
            Column::string("Status", "The status of the node"),
            Column::string("Roles", "The roles of the node"),
            age,
            Column::string("Version", D_NODE_KUBELET),
            Column::string("Internal-IP", D_NODE_ADDRESSES).wide(),
            Column::string("External-IP", D_NODE_ADDRESSES).wide(),
            Column::string("OS-Image", D_NODE_OS).wide(),
            Column::string("Kernel-Version", D_NODE_KERNEL).wide(),
            Column::string("Container-Runtime", D_NODE_RUNTIME).wide(),
        ],
        ("", "Namespace") => {
            vec![name, Column::string("Status", "The status of the namespace"), age]
        }
        ("", "Service") => vec![
            name,
            Column::string("Type", D_SVC_TYPE),
            Column::string("Cluster-IP", D_SVC_CLUSTERIP),
            Column::string("External-IP", D_SVC_EXTERNALIPS),
            Column::string("Port(s)", D_SVC_PORTS),
            age,
            Column::string("Selector", D_SVC_SELECTOR).wide(),
        ],
        ("", "ConfigMap") => vec![name, Column::string("Data", D_CM_DATA), age],
        ("", "ResourceQuota") => vec![
            name,
            age,
            Column::string(
                "Request",
                "Request represents a minimum amount of cpu/memory that a container may consume.",
            ),
            Column::string(
                "Limit",
                "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node.",
            ),
        ],
        ("", "LimitRange") => {
            vec![name, Column::new("Created At", "date", "Time at which the object was created.")]
        }
        ("", "Secret") => vec![
            name,
            Column::string("Type", D_SECRET_TYPE),
            Column::string("Data", D_SECRET_DATA),
            age,
        ],
        ("", "ServiceAccount") => vec![name, Column::string("Secrets", D_SA_SECRETS), age],
        // Upstream's RBAC printers (`printRole`, `printRoleBinding`).
        ("rbac.authorization.k8s.io", "Role" | "ClusterRole") => {
            vec![name, Column::string("Created At", "Time at which the object was created.")]
        }
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => vec![
            name,
            Column::string("Role", "Role referenced by this binding."),
            age,
            Column::string("Users", "Users in the binding.").wide(),
            Column::string("Groups", "Groups in the binding.").wide(),
            Column::string("ServiceAccounts", "ServiceAccounts in the binding.").wide(),
        ],
        ("", "PersistentVolume") => vec![
            name,
            Column::string("Capacity", "The capacity of the volume."),
            Column::string("Access Modes", D_PV_ACCESS),
            Column::string(
                "Reclaim Policy",
                "What happens to the volume when its claim is released.",
            ),
            Column::string("Status", "The phase of the volume."),
            Column::string("Claim", "The claim bound to the volume."),
            Column::string("StorageClass", D_PV_CLASS),
            Column::string("VolumeAttributesClass", D_PV_VAC),
            Column::string("Reason", "Why the volume is in its phase."),
            age,
            Column::string("VolumeMode", D_PV_MODE).wide(),
        ],
        ("", "PersistentVolumeClaim") => vec![
            name,
            Column::string("Status", "The phase of the claim."),
            Column::string("Volume", "The volume bound to the claim."),
            Column::string("Capacity", "The capacity of the bound volume."),
            Column::string("Access Modes", D_PV_ACCESS),
            Column::string("StorageClass", D_PV_CLASS),
            Column::string("VolumeAttributesClass", D_PV_VAC),
            age,
            Column::string("VolumeMode", D_PV_MODE).wide(),
        ],
        ("storage.k8s.io", "StorageClass") => vec![
            name,
            Column::string("Provisioner", "The provisioner that creates volumes of the class."),
            Column::string("ReclaimPolicy", "The reclaim policy of the volumes it provisions."),
            Column::string("VolumeBindingMode", "When claims of the class are bound."),
            Column::new("AllowVolumeExpansion", "boolean", "Whether claims may grow."),
            age,
        ],
        ("", "Endpoints") => vec![name, Column::string("Endpoints", D_EP_SUBSETS), age],
        // Upstream lists Name last (wide only): events are read by time, not by name.
        ("" | "events.k8s.io", "Event") => {
            let mut name = name;
            name.priority = 1;
            vec![
                Column::string("Last Seen", D_EV_LAST),
                Column::string("Type", D_EV_TYPE),
                Column::string("Reason", D_EV_REASON),
                Column::string("Object", D_EV_OBJECT),
                Column::string("Subobject", D_OBJREF_FIELDPATH).wide(),
                Column::string("Source", D_EV_SOURCE).wide(),
                Column::string("Message", D_EV_MESSAGE),
                Column::string("First Seen", D_EV_FIRST).wide(),
                Column::string("Count", D_EV_COUNT).wide(),
                name,
            ]
        }
        ("apps", "Deployment") => {
            let mut c = vec![
                name,
                Column::string("Ready", D_WORKLOAD_READY),
                Column::string("Up-to-date", D_DEP_UPDATED),
                Column::string("Available", D_DEP_AVAILABLE),
                age,
            ];
            c.extend(containers_and_images());
            c.push(Column::string("Selector", D_DEP_SELECTOR).wide());
            c
        }
        ("apps", "ReplicaSet") => {
            let mut c = vec![
                name,
                Column::integer("Desired", D_RS_SPEC_REPLICAS),
                Column::integer("Current", D_RS_REPLICAS),
                Column::integer("Ready", D_RS_READY),
                age,
            ];
            c.extend(containers_and_images());
            c.push(Column::string("Selector", D_RS_SELECTOR).wide());
            c
        }
        ("apps", "StatefulSet") => {
            let mut c = vec![name, Column::string("Ready", D_WORKLOAD_READY), age];
            c.extend(containers_and_images());
            c
        }
        ("apps", "DaemonSet") => {
            let mut c = vec![
                name,
                Column::integer("Desired", D_DS_DESIRED),
                Column::integer("Current", D_DS_CURRENT),
                Column::integer("Ready", D_DS_READY),
                Column::integer("Up-to-date", D_DS_UPDATED),
                Column::integer("Available", D_DS_AVAILABLE),
                Column::string("Node Selector", D_POD_NODESELECTOR),
                age,
            ];
            c.extend(containers_and_images());
            c.push(Column::string("Selector", D_DS_SELECTOR).wide());
            c
        }
        ("apps", "ControllerRevision") => vec![
            name,
            Column::string("Controller", "Controller of the object"),
            Column::string("Revision", D_CR_REVISION),
            age,
        ],
        ("batch", "Job") => {
            let mut c = vec![
                name,
                Column::string("Status", "Status of the job."),
                Column::string("Completions", D_JOB_SUCCEEDED),
                Column::string("Duration", "Time required to complete the job."),
                age,
            ];
            c.extend(containers_and_images());
            c.push(Column::string("Selector", D_JOB_SELECTOR).wide());
            c
        }
        ("batch", "CronJob") => {
            let mut c = vec![
                name,
                Column::string("Schedule", D_CJ_SCHEDULE),
                Column::string("Timezone", D_CJ_TZ),
                Column::new("Suspend", "boolean", D_CJ_SUSPEND),
                Column::integer("Active", D_CJ_ACTIVE),
                Column::string("Last Schedule", D_CJ_LAST),
                age,
            ];
            c.extend(containers_and_images());
            c.push(Column::string("Selector", D_JOB_SELECTOR).wide());
            c
        }
        ("coordination.k8s.io", "Lease") => {
            vec![name, Column::string("Holder", D_LEASE_HOLDER), age]
        }
        ("discovery.k8s.io", "EndpointSlice") => vec![
            name,
            Column::string("AddressType", D_EPS_ADDRTYPE),
            Column::string("Ports", D_EPS_PORTS),
            Column::string("Endpoints", D_EPS_ENDPOINTS),
            age,
        ],
        ("autoscaling", "HorizontalPodAutoscaler") => hpa::columns(),
        ("policy", "PodDisruptionBudget") => pdb::columns(),
        // CRDs are printed by apiextensions-apiserver's `rest.NewDefaultTableConvertor`.
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            vec![name, Column::new("Created At", "date", D_META_CREATION)]
        }
        _ => vec![name, age],
    }
}

/// One row's cells for an object of a kind, one per entry of [`columns`] and in that order.
///
/// `AGE` cells and other durations are [`human_duration`] of `now` minus the timestamp, or
/// `<unknown>` when the timestamp is missing, as upstream's `translateTimestampSince`.
/// Fields the stored object omits read as upstream's defaults where the printer depends on
/// them (`spec.replicas` 1, Service `spec.type` `ClusterIP`, port `protocol` `TCP`).
pub fn cells(group: &str, kind: &str, obj: &Value, now: Timestamp) -> Vec<Value> {
    let name = json!(text(obj, "/metadata/name"));
    let age = json!(age(obj, now));
    match (group, kind) {
        ("", "Pod") => pod_cells(obj, now),
        ("", "Node") => node_cells(obj, now),
        ("", "Namespace") => vec![name, json!(text(obj, "/status/phase")), age],
        ("", "Service") => service_cells(obj, now),
        ("", "ConfigMap") => {
            vec![name, json!(count(obj, "/data") + count(obj, "/binaryData")), age]
        }
        ("", "Secret") => {
            vec![name, json!(text(obj, "/type")), json!(count(obj, "/data")), age]
        }
        ("", "ServiceAccount") => vec![name, json!(count(obj, "/secrets")), age],
        ("", "ResourceQuota") => {
            let (request, limit) = quota_cells(obj);
            vec![name, age, json!(request), json!(limit)]
        }
        ("", "LimitRange") => vec![name, json!(text(obj, "/metadata/creationTimestamp"))],
        ("rbac.authorization.k8s.io", "Role" | "ClusterRole") => {
            vec![name, json!(text(obj, "/metadata/creationTimestamp"))]
        }
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            let role = format!("{}/{}", text(obj, "/roleRef/kind"), text(obj, "/roleRef/name"));
            let subjects = |kind: &str| {
                let names: Vec<String> = obj
                    .get("subjects")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter(|s| text(s, "/kind") == kind)
                    .map(|s| match text(s, "/namespace") {
                        ns if kind == "ServiceAccount" => format!("{ns}/{}", text(s, "/name")),
                        _ => text(s, "/name").to_owned(),
                    })
                    .collect();
                json!(names.join(", "))
            };
            vec![
                name,
                json!(role),
                age,
                subjects("User"),
                subjects("Group"),
                subjects("ServiceAccount"),
            ]
        }
        ("", "PersistentVolume") => {
            let claim = match obj.pointer("/spec/claimRef") {
                Some(c) => format!("{}/{}", text(c, "/namespace"), text(c, "/name")),
                None => String::new(),
            };
            vec![
                name,
                json!(text(obj, "/spec/capacity/storage")),
                json!(access_modes(obj.pointer("/spec/accessModes"))),
                json!(text(obj, "/spec/persistentVolumeReclaimPolicy")),
                json!(storage_phase(obj)),
                json!(claim),
                json!(text(obj, "/spec/storageClassName")),
                json!(or_unset(text(obj, "/spec/volumeAttributesClassName"))),
                json!(text(obj, "/status/reason")),
                age,
                json!(or_unset(text(obj, "/spec/volumeMode"))),
            ]
        }
        ("", "PersistentVolumeClaim") => {
            // Upstream prints capacity and access modes only once the claim names a volume.
            let bound = !text(obj, "/spec/volumeName").is_empty();
            let (capacity, modes) = if bound {
                (
                    text(obj, "/status/capacity/storage").to_owned(),
                    access_modes(obj.pointer("/status/accessModes")),
                )
            } else {
                (String::new(), String::new())
            };
            vec![
                name,
                json!(storage_phase(obj)),
                json!(text(obj, "/spec/volumeName")),
                json!(capacity),
                json!(modes),
                json!(text(obj, "/spec/storageClassName")),
                json!(or_unset(text(obj, "/spec/volumeAttributesClassName"))),
                age,
                json!(or_unset(text(obj, "/spec/volumeMode"))),
            ]
        }
        ("storage.k8s.io", "StorageClass") => {
            let default = obj
                .pointer("/metadata/annotations")
                .and_then(|a| a.get("storageclass.kubernetes.io/is-default-class"))
                .and_then(Value::as_str)
                == Some("true");
            let mut n = text(obj, "/metadata/name").to_owned();
            if default {
                n.push_str(" (default)");
            }
            let or = |p: &str, d: &'static str| match text(obj, p) {
                "" => d.to_owned(),
                v => v.to_owned(),
            };
            vec![
                json!(n),
                json!(text(obj, "/provisioner")),
                json!(or("/reclaimPolicy", "Delete")),
                json!(or("/volumeBindingMode", "Immediate")),
                json!(obj.get("allowVolumeExpansion").and_then(Value::as_bool).unwrap_or(false)),
                age,
            ]
        }
        ("", "Endpoints") => vec![name, json!(format_endpoints(obj)), age],
        ("", "Event") => event_cells(obj, now, false),
        ("events.k8s.io", "Event") => event_cells(obj, now, true),
        ("apps", "Deployment") => {
            let [names, images] = container_cells(obj, "/spec/template/spec/containers");
            let selector = match LabelSelector::from_label_selector(
                obj.pointer("/spec/selector").unwrap_or(&Value::Null),
            ) {
                Ok(s) => s.to_string(),
                Err(_) => "<invalid>".to_owned(),
            };
            vec![
                name,
                json!(format!("{}/{}", int(obj, "/status/readyReplicas"), replicas(obj))),
                json!(int(obj, "/status/updatedReplicas")),
                json!(int(obj, "/status/availableReplicas")),
                age,
                json!(names),
                json!(images),
                json!(selector),
            ]
        }
        ("apps", "ReplicaSet") => {
            let [names, images] = container_cells(obj, "/spec/template/spec/containers");
            vec![
                name,
                json!(replicas(obj)),
                json!(int(obj, "/status/replicas")),
                json!(int(obj, "/status/readyReplicas")),
                age,
                json!(names),
                json!(images),
                json!(format_label_selector(obj.pointer("/spec/selector"))),
            ]
        }
        ("apps", "StatefulSet") => {
            let [names, images] = container_cells(obj, "/spec/template/spec/containers");
            let ready = format!("{}/{}", int(obj, "/status/readyReplicas"), replicas(obj));
            vec![name, json!(ready), age, json!(names), json!(images)]
        }
        ("apps", "DaemonSet") => {
            let [names, images] = container_cells(obj, "/spec/template/spec/containers");
            vec![
                name,
                json!(int(obj, "/status/desiredNumberScheduled")),
                json!(int(obj, "/status/currentNumberScheduled")),
                json!(int(obj, "/status/numberReady")),
                json!(int(obj, "/status/updatedNumberScheduled")),
                json!(int(obj, "/status/numberAvailable")),
                json!(format_labels(obj.pointer("/spec/template/spec/nodeSelector"))),
                age,
                json!(names),
                json!(images),
                json!(format_label_selector(obj.pointer("/spec/selector"))),
            ]
        }
        ("apps", "ControllerRevision") => {
            vec![name, json!(controller_of(obj)), json!(int(obj, "/revision")), age]
        }
        ("batch", "Job") => job_cells(obj, now),
        ("batch", "CronJob") => cron_job_cells(obj, now),
        ("coordination.k8s.io", "Lease") => {
            vec![name, json!(text(obj, "/spec/holderIdentity")), age]
        }
        ("discovery.k8s.io", "EndpointSlice") => vec![
            name,
            json!(text(obj, "/addressType")),
            json!(format_discovery_ports(obj)),
            json!(format_discovery_endpoints(obj)),
            age,
        ],
        ("autoscaling", "HorizontalPodAutoscaler") => hpa::cells(obj, now),
        ("policy", "PodDisruptionBudget") => pdb::cells(obj, now),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            // `rest.NewDefaultTableConvertor`: RFC 3339 in UTC, whole seconds.
            let created = time(obj, "/metadata/creationTimestamp")
                .unwrap_or(GO_ZERO_TIME)
                .strftime("%Y-%m-%dT%H:%M:%SZ")
                .to_string();
            vec![name, json!(created)]
        }
        _ => vec![name, age],
    }
}

// --- reading the object ----------------------------------------------------------------------

/// `helper.GetAccessModesAsString`: the short forms in upstream's fixed order.
fn access_modes(modes: Option<&Value>) -> String {
    let modes = modes.and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ]
    .iter()
    .filter(|(m, _)| modes.iter().any(|x| x == m))
    .map(|(_, short)| *short)
    .collect::<Vec<_>>()
    .join(",")
}

/// A claim's or volume's phase, `Terminating` once it is being deleted.
fn storage_phase(obj: &Value) -> &str {
    if obj.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null()) {
        "Terminating"
    } else {
        text(obj, "/status/phase")
    }
}

fn or_unset(s: &str) -> &str {
    if s.is_empty() { "<unset>" } else { s }
}

fn text<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn int(obj: &Value, pointer: &str) -> i64 {
    obj.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn items<'a>(obj: &'a Value, pointer: &str) -> &'a [Value] {
    obj.pointer(pointer).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

/// The number of entries of an array or map field (`len(obj.Data)`).
fn count(obj: &Value, pointer: &str) -> usize {
    match obj.pointer(pointer) {
        Some(Value::Array(a)) => a.len(),
        Some(Value::Object(o)) => o.len(),
        _ => 0,
    }
}

/// `spec.replicas`, defaulted to 1 as the API server does for workloads.
fn replicas(obj: &Value) -> i64 {
    obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1)
}

/// Go's zero `time.Time` (`0001-01-01T00:00:00Z`), which upstream treats as "no timestamp".
const GO_ZERO_TIME: Timestamp = Timestamp::constant(-62_135_596_800, 0);

/// A `metav1.Time`/`MicroTime` field; `None` when missing, unparseable or Go's zero time.
fn time(obj: &Value, pointer: &str) -> Option<Timestamp> {
    let t: Timestamp = obj.pointer(pointer)?.as_str()?.parse().ok()?;
    (t != GO_ZERO_TIME).then_some(t)
}

/// `translateTimestampSince`.
fn since(t: Option<Timestamp>, now: Timestamp) -> String {
    match t {
        Some(t) => human_duration(now.duration_since(t)),
        None => "<unknown>".to_owned(),
    }
}

/// Upstream `printResourceQuota`: `name: used/hard` for each resource of `spec.hard` in name
/// order, the `limits.*` ones in the Limit cell, the others in the Request cell.
fn quota_cells(obj: &Value) -> (String, String) {
    let mut names: Vec<&String> = obj
        .pointer("/spec/hard")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, _)| k)
        .collect();
    names.sort();
    let (mut request, mut limit) = (Vec::new(), Vec::new());
    for r in names {
        let q = |part: &str| {
            obj.pointer(&format!("/status/{part}")).and_then(|m| m.get(r)).map_or_else(
                || "0".to_owned(),
                |v| v.as_str().map_or_else(|| v.to_string(), str::to_owned),
            )
        };
        let cell = format!("{r}: {}/{}", q("used"), q("hard"));
        if r.split('.').next() == Some("limits") && r.contains('.') {
            limit.push(cell);
        } else {
            request.push(cell);
        }
    }
    (request.join(", "), limit.join(", "))
}

fn age(obj: &Value, now: Timestamp) -> String {
    since(time(obj, "/metadata/creationTimestamp"), now)
}

/// `layoutContainerCells`: container names and images, each joined by `,`.
fn container_cells(obj: &Value, pointer: &str) -> [String; 2] {
    let containers = items(obj, pointer);
    let names: Vec<&str> = containers.iter().map(|c| text(c, "/name")).collect();
    let images: Vec<&str> = containers.iter().map(|c| text(c, "/image")).collect();
    [names.join(","), images.join(",")]
}

/// `labels.FormatLabels`: `k=v` sorted by key, or `<none>`.
fn format_labels(map: Option<&Value>) -> String {
    let mut pairs: Vec<(&str, &str)> = map
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.as_str(), v.as_str().unwrap_or(""))).collect())
        .unwrap_or_default();
    pairs.sort_unstable();
    if pairs.is_empty() {
        return "<none>".to_owned();
    }
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// `metav1.FormatLabelSelector`: the selector's string form, `<none>` if empty, `<error>` if
/// invalid.
fn format_label_selector(selector: Option<&Value>) -> String {
    match LabelSelector::from_label_selector(selector.unwrap_or(&Value::Null)) {
        Ok(s) => {
            let s = s.to_string();
            if s.is_empty() { "<none>".to_owned() } else { s }
        }
        Err(_) => "<error>".to_owned(),
    }
}

fn condition_status<'a>(conditions: &'a [Value], type_: &str) -> Option<&'a str> {
    conditions.iter().find(|c| text(c, "/type") == type_).map(|c| text(c, "/status"))
}

// --- Pod -----------------------------------------------------------------------------------

/// `printPod`: READY, STATUS and RESTARTS as kubectl shows them.
fn pod_cells(pod: &Value, now: Timestamp) -> Vec<Value> {
    let phase = text(pod, "/status/phase");
    let mut reason = match text(pod, "/status/reason") {
        "" => phase.to_owned(),
        r => r.to_owned(),
    };
    let conditions = items(pod, "/status/conditions");
    if conditions
        .iter()
        .any(|c| text(c, "/type") == "PodScheduled" && text(c, "/reason") == "SchedulingGated")
    {
        reason = "SchedulingGated".to_owned();
    }

    let init_specs = items(pod, "/spec/initContainers");
    // A sidecar: an init container with `restartPolicy: Always`; it counts as a container.
    let restartable = |name: &str| {
        init_specs.iter().any(|c| text(c, "/name") == name && text(c, "/restartPolicy") == "Always")
    };
    let total = items(pod, "/spec/containers").len()
        + init_specs.iter().filter(|c| text(c, "/restartPolicy") == "Always").count();
    let mut ready = 0;
    let mut restarts = 0;
    let mut sidecar_restarts = 0;
    let mut last_restart: Option<Timestamp> = None;
    let mut last_sidecar_restart: Option<Timestamp> = None;
    let later = |a: Option<Timestamp>, b: Option<Timestamp>| a.max(b);

    let mut initializing = false;
    for (i, status) in items(pod, "/status/initContainerStatuses").iter().enumerate() {
        let count = int(status, "/restartCount");
        let finished = time(status, "/lastState/terminated/finishedAt");
        restarts += count;
        last_restart = later(last_restart, finished);
        let sidecar = restartable(text(status, "/name"));
        if sidecar {
            sidecar_restarts += count;
            last_sidecar_restart = later(last_sidecar_restart, finished);
        }
        let terminated = status.pointer("/state/terminated").filter(|t| t.is_object());
        let waiting_reason = text(status, "/state/waiting/reason");
        match terminated {
            Some(t) if int(t, "/exitCode") == 0 => continue,
            _ if sidecar && status.get("started").and_then(Value::as_bool) == Some(true) => {
                if status.get("ready").and_then(Value::as_bool) == Some(true) {
                    ready += 1;
                }
                continue;
            }
            Some(t) => {
                reason = match text(t, "/reason") {
                    "" if int(t, "/signal") != 0 => format!("Init:Signal:{}", int(t, "/signal")),
                    "" => format!("Init:ExitCode:{}", int(t, "/exitCode")),
                    r => format!("Init:{r}"),
                };
            }
            None if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" => {
                reason = format!("Init:{waiting_reason}");
            }
            None => reason = format!("Init:{i}/{}", init_specs.len()),
        }
        initializing = true;
        break;
    }

    if !initializing || condition_status(conditions, "Initialized") == Some("True") {
        // Restarts of completed init containers no longer count once the pod is initialized.
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        for status in items(pod, "/status/containerStatuses").iter().rev() {
            restarts += int(status, "/restartCount");
            last_restart = later(last_restart, time(status, "/lastState/terminated/finishedAt"));
            let terminated = status.pointer("/state/terminated").filter(|t| t.is_object());
            let waiting_reason = text(status, "/state/waiting/reason");
            if !waiting_reason.is_empty() {
                reason = waiting_reason.to_owned();
            } else if let Some(t) = terminated {
                reason = match text(t, "/reason") {
                    "" if int(t, "/signal") != 0 => format!("Signal:{}", int(t, "/signal")),
                    "" => format!("ExitCode:{}", int(t, "/exitCode")),
                    r => r.to_owned(),
                };
            } else if status.get("ready").and_then(Value::as_bool) == Some(true)
                && status.pointer("/state/running").is_some_and(Value::is_object)
            {
                has_running = true;
                ready += 1;
            }
        }
        // A pod whose last container completed but another still runs is Running (or
        // NotReady), not Completed.
        if reason == "Completed" && has_running {
            reason = if condition_status(conditions, "Ready") == Some("True") {
                "Running".to_owned()
            } else {
                "NotReady".to_owned()
            };
        }
    }

    let deleting = pod.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null());
    if deleting && text(pod, "/status/reason") == "NodeLost" {
        reason = "Unknown".to_owned();
    } else if deleting && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".to_owned();
    }

    let restarts = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", since(Some(t), now)),
        _ => restarts.to_string(),
    };

    let pod_ip = items(pod, "/status/podIPs")
        .first()
        .map(|ip| text(ip, "/ip"))
        .filter(|ip| !ip.is_empty())
        .unwrap_or_else(|| text(pod, "/status/podIP"));
    let or_none = |s: &str| if s.is_empty() { "<none>".to_owned() } else { s.to_owned() };
    let gates = items(pod, "/spec/readinessGates");
    let readiness_gates = if gates.is_empty() {
        "<none>".to_owned()
    } else {
        let passing = gates
            .iter()
            .filter(|g| condition_status(conditions, text(g, "/conditionType")) == Some("True"))
            .count();
        format!("{passing}/{}", gates.len())
    };
    vec![
        json!(text(pod, "/metadata/name")),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts),
        json!(age(pod, now)),
        json!(or_none(pod_ip)),
        json!(or_none(text(pod, "/spec/nodeName"))),
        json!(or_none(text(pod, "/status/nominatedNodeName"))),
        json!(readiness_gates),
    ]
}

// --- Node, Service, Endpoints ------------------------------------------------------------------

fn node_cells(node: &Value, now: Timestamp) -> Vec<Value> {
    // Only the Ready condition is shown; the last one wins if it is listed twice, as upstream.
    let ready = items(node, "/status/conditions")
        .iter()
        .rfind(|c| text(c, "/type") == "Ready")
        .map(|c| text(c, "/status"));
    let mut status = vec![match ready {
        Some("True") => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    }];
    if node.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push("SchedulingDisabled");
    }

    let mut roles = BTreeSet::new();
    if let Some(labels) = node.pointer("/metadata/labels").and_then(Value::as_object) {
        for (k, v) in labels {
            if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.insert(role);
                }
            } else if let Some(v) =
                v.as_str().filter(|v| k == "kubernetes.io/role" && !v.is_empty())
            {
                roles.insert(v);
            }
        }
    }
    let roles = if roles.is_empty() {
        "<none>".to_owned()
    } else {
        roles.into_iter().collect::<Vec<_>>().join(",")
    };

    let address = |type_: &str| {
        items(node, "/status/addresses")
            .iter()
            .find(|a| text(a, "/type") == type_)
            .map_or("<none>", |a| text(a, "/address"))
    };
    let info = |field: &str| match text(node, &format!("/status/nodeInfo/{field}")) {
        "" => "<unknown>",
        v => v,
    };
    vec![
        json!(text(node, "/metadata/name")),
        json!(status.join(",")),
        json!(roles),
        json!(age(node, now)),
        json!(text(node, "/status/nodeInfo/kubeletVersion")),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(info("osImage")),
        json!(info("kernelVersion")),
        json!(info("containerRuntimeVersion")),
    ]
}

fn service_cells(svc: &Value, now: Timestamp) -> Vec<Value> {
    let type_ = match text(svc, "/spec/type") {
        "" => "ClusterIP",
        t => t,
    };
    let cluster_ip = items(svc, "/spec/clusterIPs")
        .first()
        .and_then(Value::as_str)
        .unwrap_or_else(|| text(svc, "/spec/clusterIP"));
    let cluster_ip = if cluster_ip.is_empty() { "<none>" } else { cluster_ip };

    let external_ips: Vec<&str> =
        items(svc, "/spec/externalIPs").iter().filter_map(Value::as_str).collect();
    let external = match type_ {
        "ClusterIP" | "NodePort" if external_ips.is_empty() => "<none>".to_owned(),
        "ClusterIP" | "NodePort" => external_ips.join(","),
        "LoadBalancer" => {
            // `loadBalancerStatusStringer` with wide output: sorted, deduplicated, not clipped.
            let lb: BTreeSet<&str> = items(svc, "/status/loadBalancer/ingress")
                .iter()
                .map(|i| match text(i, "/ip") {
                    "" => text(i, "/hostname"),
                    ip => ip,
                })
                .filter(|s| !s.is_empty())
                .collect();
            let mut all: Vec<&str> = lb.into_iter().collect();
            all.extend(&external_ips);
            if all.is_empty() { "<pending>".to_owned() } else { all.join(",") }
        }
        "ExternalName" => text(svc, "/spec/externalName").to_owned(),
        _ => "<unknown>".to_owned(),
    };

    let ports: Vec<String> = items(svc, "/spec/ports")
        .iter()
        .map(|p| {
            let protocol = match text(p, "/protocol") {
                "" => "TCP",
                proto => proto,
            };
            match int(p, "/nodePort") {
                n if n > 0 => format!("{}:{n}/{protocol}", int(p, "/port")),
                _ => format!("{}/{protocol}", int(p, "/port")),
            }
        })
        .collect();
    let ports = if ports.is_empty() { "<none>".to_owned() } else { ports.join(",") };

    vec![
        json!(text(svc, "/metadata/name")),
        json!(type_),
        json!(cluster_ip),
        json!(external),
        json!(ports),
        json!(age(svc, now)),
        json!(format_labels(svc.pointer("/spec/selector"))),
    ]
}

/// `net.JoinHostPort`: brackets around IPv6 addresses.
fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

/// `formatEndpoints` with all ports: up to three `ip:port`, then `+ N more...`.
fn format_endpoints(obj: &Value) -> String {
    const MAX: usize = 3;
    let subsets = items(obj, "/subsets");
    if subsets.is_empty() {
        return "<none>".to_owned();
    }
    let mut list = Vec::new();
    let mut more = false;
    let mut count = 0;
    for ss in subsets {
        let addresses = items(ss, "/addresses");
        let ports = items(ss, "/ports");
        if ports.is_empty() {
            // Headless services may have no ports.
            count += addresses.len();
            for a in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(text(a, "/ip").to_owned());
            }
            continue;
        }
        for port in ports {
            count += addresses.len();
            for a in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(join_host_port(text(a, "/ip"), int(port, "/port")));
            }
        }
    }
    let joined = list.join(",");
    if more { format!("{joined} + {} more...", count - MAX) } else { joined }
}

/// `listWithMoreString`.
fn list_with_more(list: &[String], count: usize) -> String {
    const MAX: usize = 3;
    let joined = list.join(",");
    if count > MAX {
        format!("{joined} + {} more...", count - MAX)
    } else if joined.is_empty() {
        "<unset>".to_owned()
    } else {
        joined
    }
}

fn format_discovery_ports(obj: &Value) -> String {
    let ports = items(obj, "/ports");
    let list: Vec<String> = ports
        .iter()
        .take(3)
        .map(|p| {
            match (p.get("port").and_then(Value::as_i64), p.get("name").and_then(Value::as_str)) {
                (Some(port), _) => port.to_string(),
                (None, Some(name)) => name.to_owned(),
                (None, None) => "*".to_owned(),
            }
        })
        .collect();
    list_with_more(&list, ports.len())
}

fn format_discovery_endpoints(obj: &Value) -> String {
    let addresses: Vec<&str> = items(obj, "/endpoints")
        .iter()
        .flat_map(|e| items(e, "/addresses"))
        .map(|a| a.as_str().unwrap_or(""))
        .collect();
    let list: Vec<String> = addresses.iter().take(3).map(|a| (*a).to_owned()).collect();
    list_with_more(&list, addresses.len())
}

// --- Event ---------------------------------------------------------------------------------

/// `printEvent` (wide). `events.k8s.io` events carry the same data under other names
/// (`regarding`, `note`, `deprecatedLastTimestamp`, ...); upstream converts them to the core
/// type before printing, so both print alike.
fn event_cells(ev: &Value, now: Timestamp, events_api: bool) -> Vec<Value> {
    let field = |core: &'static str, events: &'static str| if events_api { events } else { core };
    let involved = ev.get(field("involvedObject", "regarding")).unwrap_or(&Value::Null);

    let first = match time(ev, field("/firstTimestamp", "/deprecatedFirstTimestamp")) {
        Some(t) => since(Some(t), now),
        None => since(time(ev, "/eventTime"), now),
    };
    let mut last = match time(ev, field("/lastTimestamp", "/deprecatedLastTimestamp")) {
        Some(t) => since(Some(t), now),
        None => first.clone(),
    };
    let mut count = int(ev, field("/count", "/deprecatedCount"));
    if ev.get("series").is_some_and(Value::is_object) {
        last = since(time(ev, "/series/lastObservedTime"), now);
        count = int(ev, "/series/count");
    } else if count == 0 {
        // Singleton events do not set a count in the events.k8s.io API.
        count = 1;
    }

    let kind = text(involved, "/kind").to_lowercase();
    let target = match text(involved, "/name") {
        "" => kind,
        name => format!("{kind}/{name}"),
    };

    let source = ev.get(field("source", "deprecatedSource")).unwrap_or(&Value::Null);
    let first_non_empty = |a: &'static str, b: &'static str| match text(source, a) {
        "" => text(ev, b),
        s => s,
    };
    let component = first_non_empty("/component", "/reportingController");
    let instance = first_non_empty("/host", "/reportingInstance");
    let source =
        if instance.is_empty() { component.to_owned() } else { format!("{component}, {instance}") };

    vec![
        json!(last),
        json!(text(ev, "/type")),
        json!(text(ev, "/reason")),
        json!(target),
        json!(text(involved, "/fieldPath")),
        json!(source),
        json!(text(ev, field("/message", "/note")).trim()),
        json!(first),
        json!(count),
        json!(text(ev, "/metadata/name")),
    ]
}

// --- Job, CronJob, ControllerRevision ------------------------------------------------------------

fn job_cells(job: &Value, now: Timestamp) -> Vec<Value> {
    let succeeded = int(job, "/status/succeeded");
    let completions = match job.pointer("/spec/completions").and_then(Value::as_i64) {
        Some(c) => format!("{succeeded}/{c}"),
        None => match int(job, "/spec/parallelism") {
            p if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        },
    };
    let duration = match (time(job, "/status/startTime"), time(job, "/status/completionTime")) {
        (None, _) => String::new(),
        (Some(start), None) => human_duration(now.duration_since(start)),
        (Some(start), Some(end)) => human_duration(end.duration_since(start)),
    };
    let conditions = items(job, "/status/conditions");
    let has = |t: &str| condition_status(conditions, t) == Some("True");
    let deleting = job.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null());
    let status = if has("Complete") {
        "Complete"
    } else if has("Failed") {
        "Failed"
    } else if deleting {
        "Terminating"
    } else if has("Suspended") {
        "Suspended"
    } else if has("FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    };
    let [names, images] = container_cells(job, "/spec/template/spec/containers");
    vec![
        json!(text(job, "/metadata/name")),
        json!(status),
        json!(completions),
        json!(duration),
        json!(age(job, now)),
        json!(names),
        json!(images),
        json!(format_label_selector(job.pointer("/spec/selector"))),
    ]
}

fn cron_job_cells(cj: &Value, now: Timestamp) -> Vec<Value> {
    let last_schedule = match time(cj, "/status/lastScheduleTime") {
        Some(t) => since(Some(t), now),
        None => "<none>".to_owned(),
    };
    let time_zone = cj.pointer("/spec/timeZone").and_then(Value::as_str).unwrap_or("<none>");
    let suspend = match cj.pointer("/spec/suspend").and_then(Value::as_bool) {
        Some(true) => "True",
        Some(false) => "False",
        None => "<unset>",
    };
    let [names, images] = container_cells(cj, "/spec/jobTemplate/spec/template/spec/containers");
    vec![
        json!(text(cj, "/metadata/name")),
        json!(text(cj, "/spec/schedule")),
        json!(time_zone),
        json!(suspend),
        json!(items(cj, "/status/active").len()),
        json!(last_schedule),
        json!(age(cj, now)),
        json!(names),
        json!(images),
        json!(format_label_selector(cj.pointer("/spec/jobTemplate/spec/selector"))),
    ]
}

/// The controlling owner as `kind.group/name` in lower case (`daemonset.apps/web`).
fn controller_of(obj: &Value) -> String {
    let Some(owner) = items(obj, "/metadata/ownerReferences")
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
    else {
        return "<none>".to_owned();
    };
    // `schema.ParseGroupVersion`: `v1` is the core group, `apps/v1` the group `apps`.
    let group = text(owner, "/apiVersion").split_once('/').map_or("", |(g, _)| g);
    let kind = text(owner, "/kind");
    let name = text(owner, "/name");
    match (kind, group) {
        ("", "") => name.to_owned(),
        (kind, "") => format!("{}/{name}", kind.to_lowercase()),
        (kind, group) => format!("{}/{name}", format!("{kind}.{group}").to_lowercase()),
    }
}

// --- custom resources ----------------------------------------------------------------------

/// The columns of a custom resource version from its CRD `additionalPrinterColumns`
/// (`[{name, type, format, description, priority, jsonPath}]`), as apiextensions-apiserver's
/// `tableconvertor.New`: `Name` (format `name`) first, then the CRD's columns as given.
///
/// When the list is empty or absent, the single column `Age` (type `date`,
/// `.metadata.creationTimestamp`) stands in for it, as upstream's `serveDefaultColumnsIfEmpty`;
/// a non-empty list gets no `Age` column added, so a CRD that wants one declares it. A column
/// without a description is described by its JSONPath, as upstream.
pub fn custom_columns(printer_columns: &Value) -> Vec<Column> {
    let mut out = vec![Column::name()];
    let declared = printer_columns.as_array().map(Vec::as_slice).unwrap_or(&[]);
    if declared.is_empty() {
        let mut age = Column::new("Age", "date", D_META_CREATION);
        age.json_path = Some(".metadata.creationTimestamp".to_owned());
        out.push(age);
        return out;
    }
    for c in declared {
        let path = text(c, "/jsonPath");
        let description = match text(c, "/description") {
            "" => format!("Custom resource definition column (in JSONPath format): {path}"),
            d => d.to_owned(),
        };
        out.push(Column {
            name: text(c, "/name").to_owned(),
            type_: text(c, "/type").to_owned(),
            format: text(c, "/format").to_owned(),
            description,
            priority: i32::try_from(int(c, "/priority")).unwrap_or(0),
            json_path: Some(path.to_owned()),
        });
    }
    out
}

/// One row's cells for a custom resource: each column's JSONPath evaluated against the object
/// and converted to the column's type (`cellForJSONValue`); a column without a path is the
/// object's name.
///
/// A path that finds nothing (or that this evaluator cannot parse) gives a `null` cell, which
/// kubectl prints as `<none>`. Supported: `.a.b`, `['a/b']`/`["a.b"]`, `\.` escapes in names,
/// `[0]` and `[-1]`, `[*]`/`.*` (first match), and filters `[?(@.type=="Ready")]` with `==`/`!=`
/// or bare existence; recursive descent (`..`) and slices are not. Cells by type: `string`
/// prints the value as kubectl's JSONPath printer does (maps and lists as JSON), `integer`,
/// `number`, `boolean` pass matching JSON through, `date` is the age of an RFC 3339 timestamp
/// (`<invalid>` if it does not parse); a value of the wrong JSON type is `null`.
pub fn custom_cells(columns: &[Column], obj: &Value, now: Timestamp) -> Vec<Value> {
    columns
        .iter()
        .map(|c| match &c.json_path {
            None => json!(text(obj, "/metadata/name")),
            Some(path) => match jsonpath::first(path, obj) {
                Some(v) => typed_cell(&c.type_, v, now),
                None => Value::Null,
            },
        })
        .collect()
}

fn typed_cell(type_: &str, v: &Value, now: Timestamp) -> Value {
    match (type_, v) {
        ("string", v) => json!(print_value(v)),
        ("integer", Value::Number(n)) => match n.as_i64() {
            Some(i) => json!(i),
            // Go's int64(float64) truncates toward zero (and saturates here).
            None => n.as_f64().map_or(Value::Null, |f| json!(f.trunc() as i64)),
        },
        ("number", Value::Number(n)) => n.as_f64().map_or(Value::Null, |f| json!(f)),
        ("boolean", Value::Bool(b)) => json!(b),
        ("date", Value::String(s)) => match s.parse::<Timestamp>() {
            Ok(t) if t == GO_ZERO_TIME => json!("<unknown>"),
            Ok(t) => json!(human_duration(now.duration_since(t))),
            Err(_) => json!("<invalid>"),
        },
        _ => Value::Null,
    }
}

/// How client-go's `JSONPath.PrintResults` prints one value: strings raw, maps and lists as
/// compact JSON with sorted keys (Go's `json.Marshal`), numbers as Go's `%v`, and a JSON
/// `null` as `<no value>` (Go's text/template spelling of a nil interface).
fn print_value(v: &Value) -> String {
    match v {
        Value::Null => "<no value>".to_owned(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => number_text(n),
        Value::Array(_) | Value::Object(_) => sorted_json(v),
    }
}

fn number_text(n: &serde_json::Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    n.as_f64().map_or_else(|| n.to_string(), go_float)
}

/// Go's `%v` of a float64: the shortest representation, in exponent form (`1e+21`, `1e-05`)
/// when the exponent is below -4 or at least 21.
fn go_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf".to_owned() } else { "-Inf".to_owned() };
    }
    let sci = format!("{f:e}");
    let Some((mantissa, exp)) = sci.split_once('e') else {
        return f.to_string();
    };
    let exp: i32 = exp.parse().unwrap_or(0);
    if f != 0.0 && !(-4..21).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.unsigned_abs())
    } else {
        f.to_string()
    }
}

fn sorted_json(v: &Value) -> String {
    fn sort(v: &Value) -> Value {
        match v {
            Value::Object(o) => {
                let mut keys: Vec<&String> = o.keys().collect();
                keys.sort_unstable();
                let mut m = Map::new();
                for k in keys {
                    if let Some(x) = o.get(k) {
                        m.insert(k.clone(), sort(x));
                    }
                }
                Value::Object(m)
            }
            Value::Array(a) => Value::Array(a.iter().map(sort).collect()),
            other => other.clone(),
        }
    }
    sort(v).to_string()
}

/// The subset of client-go's JSONPath that CRD printer columns use.
mod jsonpath {
    use serde_json::Value;

    #[derive(Debug, Clone, PartialEq)]
    enum Step {
        Field(String),
        Index(i64),
        Wildcard,
        /// `[?(@.path)]`, `[?(@.path == literal)]`, `[?(@.path != literal)]`.
        Filter {
            path: Vec<String>,
            test: Option<(bool, Value)>,
        },
    }

    /// The first value the path selects, as upstream's `results[0][0]`.
    pub(super) fn first<'a>(path: &str, obj: &'a Value) -> Option<&'a Value> {
        let steps = parse(path)?;
        let mut current = vec![obj];
        for step in &steps {
            let mut next = Vec::new();
            for v in current {
                match (step, v) {
                    (Step::Field(name), Value::Object(o)) => next.extend(o.get(name)),
                    (Step::Index(i), Value::Array(a)) => {
                        let len = i64::try_from(a.len()).ok()?;
                        let i = if *i < 0 { len + i } else { *i };
                        next.extend(usize::try_from(i).ok().and_then(|i| a.get(i)));
                    }
                    (Step::Wildcard, Value::Array(a)) => next.extend(a),
                    (Step::Wildcard, Value::Object(o)) => next.extend(o.values()),
                    (Step::Filter { path, test }, Value::Array(a)) => {
                        next.extend(
                            a.iter().filter(|item| filter_matches(item, path, test.as_ref())),
                        );
                    }
                    _ => {}
                }
            }
            current = next;
        }
        current.first().copied()
    }

    fn filter_matches(item: &Value, path: &[String], test: Option<&(bool, Value)>) -> bool {
        let mut v = item;
        for p in path {
            match v.get(p) {
                Some(x) => v = x,
                None => return false,
            }
        }
        let Some((equal, literal)) = test else {
            return true;
        };
        let same = match (v, literal) {
            (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
            (a, b) => a == b,
        };
        same == *equal
    }

    fn parse(path: &str) -> Option<Vec<Step>> {
        let mut s = path.trim();
        if let Some(inner) = s.strip_prefix('{').and_then(|x| x.strip_suffix('}')) {
            s = inner.trim();
        }
        s = s.strip_prefix('$').unwrap_or(s);
        let chars: Vec<char> = s.chars().collect();
        let mut steps = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '.' => {
                    i += 1;
                    if chars.get(i) == Some(&'.') {
                        return None; // recursive descent
                    }
                    let mut name = String::new();
                    while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                        if chars[i] == '\\' && i + 1 < chars.len() {
                            i += 1;
                        }
                        name.push(chars[i]);
                        i += 1;
                    }
                    match name.as_str() {
                        "" => {} // `.` alone is the object itself
                        "*" => steps.push(Step::Wildcard),
                        _ => steps.push(Step::Field(name)),
                    }
                }
                '[' => {
                    let (step, end) = bracket(&chars, i + 1)?;
                    steps.push(step);
                    i = end;
                }
                _ => return None,
            }
        }
        Some(steps)
    }

    /// Parses the inside of `[...]` starting at `start`; returns the step and the index after `]`.
    fn bracket(chars: &[char], start: usize) -> Option<(Step, usize)> {
        let quote = *chars.get(start)?;
        if quote == '\'' || quote == '"' {
            let close = start + 1 + chars[start + 1..].iter().position(|&c| c == quote)?;
            if chars.get(close + 1) != Some(&']') {
                return None;
            }
            // client-go drops the backslash of `\.` inside quotes too: Knative's Revision
            // columns use `.metadata.labels['serving\.knative\.dev/configuration']`.
            let mut name = String::new();
            let mut escaped = false;
            for &c in &chars[start + 1..close] {
                if c == '\\' && !escaped {
                    escaped = true;
                    continue;
                }
                escaped = false;
                name.push(c);
            }
            return Some((Step::Field(name), close + 2));
        }
        if quote == '?' {
            // `?( ... )]`, where the expression may hold quoted `)` or `]`.
            let mut i = start + 1;
            if chars.get(i) != Some(&'(') {
                return None;
            }
            i += 1;
            let expr_start = i;
            let mut in_quote: Option<char> = None;
            while i < chars.len() {
                match (in_quote, chars[i]) {
                    (Some(q), c) if c == q => in_quote = None,
                    (Some(_), _) => {}
                    (None, c @ ('\'' | '"')) => in_quote = Some(c),
                    (None, ')') if chars.get(i + 1) == Some(&']') => {
                        let expr: String = chars[expr_start..i].iter().collect();
                        return Some((filter(&expr)?, i + 2));
                    }
                    (None, _) => {}
                }
                i += 1;
            }
            return None;
        }
        let close = start + chars[start..].iter().position(|&c| c == ']')?;
        let inner: String = chars[start..close].iter().collect();
        let inner = inner.trim();
        let step = if inner == "*" { Step::Wildcard } else { Step::Index(inner.parse().ok()?) };
        Some((step, close + 1))
    }

    fn filter(expr: &str) -> Option<Step> {
        let expr = expr.trim();
        let (lhs, test) = match expr
            .find("==")
            .map(|i| (i, true))
            .or_else(|| expr.find("!=").map(|i| (i, false)))
        {
            Some((i, equal)) => (expr[..i].trim(), Some((equal, literal(expr[i + 2..].trim())?))),
            None => (expr, None),
        };
        let path = lhs.strip_prefix('@')?;
        let path: Vec<String> =
            path.split('.').filter(|p| !p.is_empty()).map(str::to_owned).collect();
        Some(Step::Filter { path, test })
    }

    fn literal(s: &str) -> Option<Value> {
        for q in ['\'', '"'] {
            if let Some(inner) = s.strip_prefix(q).and_then(|x| x.strip_suffix(q)) {
                return Some(Value::String(inner.to_owned()));
            }
        }
        match s {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            _ => s.parse::<f64>().ok().and_then(serde_json::Number::from_f64).map(Value::Number),
        }
    }
}

// --- the table -----------------------------------------------------------------------------

/// A `meta.k8s.io/v1` `Table`: the column definitions, then one row per `(cells, object)`,
/// with `object` embedded as given. `resource_version` and `continue_token` go to `metadata`
/// and are left out when empty, as `metav1.ListMeta`'s `omitempty`.
pub fn table(
    columns: &[Column],
    rows: Vec<(Vec<Value>, Value)>,
    resource_version: &str,
    continue_token: Option<&str>,
) -> Value {
    let mut metadata = Map::new();
    if !resource_version.is_empty() {
        metadata.insert("resourceVersion".to_owned(), json!(resource_version));
    }
    if let Some(token) = continue_token.filter(|t| !t.is_empty()) {
        metadata.insert("continue".to_owned(), json!(token));
    }
    let definitions: Vec<Value> = columns
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": c.type_,
                "format": c.format,
                "description": c.description,
                "priority": c.priority,
            })
        })
        .collect();
    let rows: Vec<Value> =
        rows.into_iter().map(|(cells, object)| json!({"cells": cells, "object": object})).collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": definitions,
        "rows": rows,
    })
}

/// Upstream's `duration.HumanDuration`: about two significant units (`5s`, `3m20s`, `15m`,
/// `2h5m`, `20h`, `2d3h`, `30d`, `2y45d`, `9y`). Up to a second in the future reads `0s`
/// (clock skew); further in the future is `<invalid>`.
pub fn human_duration(d: SignedDuration) -> String {
    let seconds = d.as_secs();
    if seconds < -1 {
        return "<invalid>".to_owned();
    }
    if seconds < 0 {
        return "0s".to_owned();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        return match seconds % 60 {
            0 => format!("{minutes}m"),
            s => format!("{minutes}m{s}s"),
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        return match minutes % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        return match hours % 24 {
            0 => format!("{}d", hours / 24),
            h => format!("{}d{h}h", hours / 24),
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        return match (hours / 24) % 365 {
            0 => format!("{}y", hours / 24 / 365),
            d => format!("{}y{d}d", hours / 24 / 365),
        };
    }
    format!("{}y", hours / 24 / 365)
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};
    use serde_json::json;

    use super::*;

    fn now() -> Timestamp {
        "2024-05-01T12:00:00Z".parse().expect("valid timestamp")
    }

    /// `now` minus a duration, as an RFC 3339 string.
    fn ago(secs: i64) -> String {
        (now() - SignedDuration::from_secs(secs)).to_string()
    }

    /// One line per column: `NAME (type, format, priority)`.
    fn check_columns(columns: &[Column], expect: Expect) {
        let actual: Vec<String> = columns
            .iter()
            .map(|c| {
                let path = c.json_path.as_deref().map(|p| format!(" {p}")).unwrap_or_default();
                format!("{} ({}, {:?}, {}){path}", c.name, c.type_, c.format, c.priority)
            })
            .collect();
        expect.assert_eq(&actual.join("\n"));
    }

    /// One line per column: `NAME: cell`; fails if there are not as many cells as columns.
    fn check_row(columns: &[Column], cells: &[Value], expect: Expect) {
        assert_eq!(columns.len(), cells.len(), "one cell per column: {cells:?}");
        let actual: Vec<String> =
            columns.iter().zip(cells).map(|(c, v)| format!("{}: {v}", c.name)).collect();
        expect.assert_eq(&actual.join("\n"));
    }

    fn check(group: &str, kind: &str, obj: Value, expect: Expect) {
        check_row(&columns(group, kind), &cells(group, kind, &obj, now()), expect);
    }

    /// Only the Ready, Status and Restarts cells of a pod.
    fn check_pod(obj: Value, expect: Expect) {
        let c = cells("", "Pod", &obj, now());
        expect.assert_eq(&format!("{} {} {}", c[1], c[2], c[3]));
    }

    fn pod(spec: Value, status: Value) -> Value {
        json!({"metadata": {"name": "p", "creationTimestamp": ago(600)}, "spec": spec, "status": status})
    }

    fn two_containers() -> Value {
        json!({"containers": [{"name": "a"}, {"name": "b"}]})
    }

    #[test]
    fn every_kind_has_one_cell_per_column() {
        let kinds = [
            ("", "Pod"),
            ("", "Node"),
            ("", "Namespace"),
            ("", "Service"),
            ("", "ConfigMap"),
            ("", "Secret"),
            ("", "ServiceAccount"),
            ("rbac.authorization.k8s.io", "ClusterRole"),
            ("rbac.authorization.k8s.io", "RoleBinding"),
            ("", "PersistentVolume"),
            ("", "PersistentVolumeClaim"),
            ("storage.k8s.io", "StorageClass"),
            ("", "Endpoints"),
            ("", "Event"),
            ("events.k8s.io", "Event"),
            ("apps", "Deployment"),
            ("apps", "ReplicaSet"),
            ("apps", "StatefulSet"),
            ("apps", "DaemonSet"),
            ("apps", "ControllerRevision"),
            ("batch", "Job"),
            ("batch", "CronJob"),
            ("coordination.k8s.io", "Lease"),
            ("discovery.k8s.io", "EndpointSlice"),
            ("apiextensions.k8s.io", "CustomResourceDefinition"),
            ("example.com", "Widget"),
        ];
        let actual: Vec<String> = kinds
            .iter()
            .map(|(group, kind)| {
                let cols = columns(group, kind);
                let row = cells(group, kind, &json!({}), now());
                assert_eq!(cols.len(), row.len(), "{group}/{kind}");
                let names: Vec<String> = cols
                    .iter()
                    .map(|c| {
                        let wide = if c.priority > 0 { "*" } else { "" };
                        format!("{}{wide}", c.name.to_uppercase())
                    })
                    .collect();
                format!("{kind}: {}", names.join(" | "))
            })
            .collect();
        expect![[r#"
            Pod: NAME | READY | STATUS | RESTARTS | AGE | IP* | NODE* | NOMINATED NODE* | READINESS GATES*
            Node: NAME | STATUS | ROLES | AGE | VERSION | INTERNAL-IP* | EXTERNAL-IP* | OS-IMAGE* | KERNEL-VERSION* | CONTAINER-RUNTIME*
            Namespace: NAME | STATUS | AGE
            Service: NAME | TYPE | CLUSTER-IP | EXTERNAL-IP | PORT(S) | AGE | SELECTOR*
            ConfigMap: NAME | DATA | AGE
            Secret: NAME | TYPE | DATA | AGE
            ServiceAccount: NAME | SECRETS | AGE
            ClusterRole: NAME | CREATED AT
            RoleBinding: NAME | ROLE | AGE | USERS* | GROUPS* | SERVICEACCOUNTS*
            PersistentVolume: NAME | CAPACITY | ACCESS MODES | RECLAIM POLICY | STATUS | CLAIM | STORAGECLASS | VOLUMEATTRIBUTESCLASS | REASON | AGE | VOLUMEMODE*
            PersistentVolumeClaim: NAME | STATUS | VOLUME | CAPACITY | ACCESS MODES | STORAGECLASS | VOLUMEATTRIBUTESCLASS | AGE | VOLUMEMODE*
            StorageClass: NAME | PROVISIONER | RECLAIMPOLICY | VOLUMEBINDINGMODE | ALLOWVOLUMEEXPANSION | AGE
            Endpoints: NAME | ENDPOINTS | AGE
            Event: LAST SEEN | TYPE | REASON | OBJECT | SUBOBJECT* | SOURCE* | MESSAGE | FIRST SEEN* | COUNT* | NAME*
            Event: LAST SEEN | TYPE | REASON | OBJECT | SUBOBJECT* | SOURCE* | MESSAGE | FIRST SEEN* | COUNT* | NAME*
            Deployment: NAME | READY | UP-TO-DATE | AVAILABLE | AGE | CONTAINERS* | IMAGES* | SELECTOR*
            ReplicaSet: NAME | DESIRED | CURRENT | READY | AGE | CONTAINERS* | IMAGES* | SELECTOR*
            StatefulSet: NAME | READY | AGE | CONTAINERS* | IMAGES*
            DaemonSet: NAME | DESIRED | CURRENT | READY | UP-TO-DATE | AVAILABLE | NODE SELECTOR | AGE | CONTAINERS* | IMAGES* | SELECTOR*
            ControllerRevision: NAME | CONTROLLER | REVISION | AGE
            Job: NAME | STATUS | COMPLETIONS | DURATION | AGE | CONTAINERS* | IMAGES* | SELECTOR*
            CronJob: NAME | SCHEDULE | TIMEZONE | SUSPEND | ACTIVE | LAST SCHEDULE | AGE | CONTAINERS* | IMAGES* | SELECTOR*
            Lease: NAME | HOLDER | AGE
            EndpointSlice: NAME | ADDRESSTYPE | PORTS | ENDPOINTS | AGE
            CustomResourceDefinition: NAME | CREATED AT
            Widget: NAME | AGE"#]].assert_eq(&actual.join("\n"));
    }

    #[test]
    fn pod_columns_and_wide_cells() {
        check_columns(
            &columns("", "Pod"),
            expect![[r#"
                Name (string, "name", 0)
                Ready (string, "", 0)
                Status (string, "", 0)
                Restarts (string, "", 0)
                Age (string, "", 0)
                IP (string, "", 1)
                Node (string, "", 1)
                Nominated Node (string, "", 1)
                Readiness Gates (string, "", 1)"#]],
        );
        check(
            "",
            "Pod",
            json!({
                "metadata": {"name": "web-0", "creationTimestamp": ago(200)},
                "spec": {"containers": [{"name": "a"}], "nodeName": "n1",
                         "readinessGates": [{"conditionType": "x/ok"}, {"conditionType": "x/lb"}]},
                "status": {"phase": "Running", "podIPs": [{"ip": "10.0.0.5"}, {"ip": "fd00::5"}],
                           "conditions": [{"type": "x/ok", "status": "True"}, {"type": "x/lb", "status": "False"}],
                           "containerStatuses": [{"name": "a", "ready": true, "restartCount": 0,
                                                  "state": {"running": {"startedAt": ago(100)}}}]},
            }),
            expect![[r#"
                Name: "web-0"
                Ready: "1/1"
                Status: "Running"
                Restarts: "0"
                Age: "3m20s"
                IP: "10.0.0.5"
                Node: "n1"
                Nominated Node: "<none>"
                Readiness Gates: "1/2""#]],
        );
        check(
            "",
            "Pod",
            json!({"metadata": {"name": "bare"}}),
            expect![[r#"
            Name: "bare"
            Ready: "0/0"
            Status: ""
            Restarts: "0"
            Age: "<unknown>"
            IP: "<none>"
            Node: "<none>"
            Nominated Node: "<none>"
            Readiness Gates: "<none>""#]],
        );
    }

    #[test]
    fn pod_status_pending_and_running() {
        check_pod(
            pod(two_containers(), json!({"phase": "Pending"})),
            expect![[r#""0/2" "Pending" "0""#]],
        );
        check_pod(
            pod(
                two_containers(),
                json!({"phase": "Pending", "containerStatuses": [
                    {"name": "a", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}},
                    {"name": "b", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}},
                ]}),
            ),
            expect![[r#""0/2" "ContainerCreating" "0""#]],
        );
        check_pod(
            pod(
                two_containers(),
                json!({"phase": "Running", "containerStatuses": [
                    {"name": "a", "ready": true, "restartCount": 0, "state": {"running": {}}},
                    {"name": "b", "ready": true, "restartCount": 0, "state": {"running": {}}},
                ]}),
            ),
            expect![[r#""2/2" "Running" "0""#]],
        );
        check_pod(
            pod(
                two_containers(),
                json!({"phase": "Running", "containerStatuses": [
                    {"name": "a", "ready": true, "restartCount": 0, "state": {"running": {}}},
                    {"name": "b", "ready": false, "restartCount": 0, "state": {"running": {}}},
                ]}),
            ),
            expect![[r#""1/2" "Running" "0""#]],
        );
        check_pod(
            pod(
                json!({"containers": [{"name": "a"}]}),
                json!({"phase": "Pending", "conditions": [
                    {"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"},
                ]}),
            ),
            expect![[r#""0/1" "SchedulingGated" "0""#]],
        );
        check_pod(
            pod(
                json!({"containers": [{"name": "a"}]}),
                json!({"phase": "Failed", "reason": "Evicted"}),
            ),
            expect![[r#""0/1" "Evicted" "0""#]],
        );
    }

    #[test]
    fn pod_status_crash_loop_and_restarts() {
        check_pod(
            pod(
                two_containers(),
                json!({"phase": "Running", "containerStatuses": [
                    {"name": "a", "ready": true, "restartCount": 0, "state": {"running": {}}},
                    {"name": "b", "ready": false, "restartCount": 4,
                     "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                     "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": ago(75)}}},
                ]}),
            ),
            expect![[r#""1/2" "CrashLoopBackOff" "4 (75s ago)""#]],
        );
        // Restarts without a recorded termination print as a bare number.
        check_pod(
            pod(
                json!({"containers": [{"name": "a"}]}),
                json!({"phase": "Running", "containerStatuses": [
                    {"name": "a", "ready": true, "restartCount": 2, "state": {"running": {}}},
                ]}),
            ),
            expect![[r#""1/1" "Running" "2""#]],
        );
        check_pod(
            pod(
                json!({"containers": [{"name": "a"}]}),
                json!({"phase": "Running", "containerStatuses": [
                    {"name": "a", "ready": false, "restartCount": 1, "state": {"terminated": {"exitCode": 137, "signal": 9}}},
                ]}),
            ),
            expect![[r#""0/1" "Signal:9" "1""#]],
        );
        check_pod(
            pod(
                json!({"containers": [{"name": "a"}]}),
                json!({"phase": "Succeeded", "containerStatuses": [
                    {"name": "a", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                ]}),
            ),
            expect![[r#""0/1" "Completed" "0""#]],
        );
        // One container completed while another still runs: Running if the pod is Ready.
        check_pod(
            pod(
                two_containers(),
                json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}], "containerStatuses": [
                    {"name": "a", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                    {"name": "b", "ready": true, "restartCount": 0, "state": {"running": {}}},
                ]}),
            ),
            expect![[r#""1/2" "Running" "0""#]],
        );
    }

    #[test]
    fn pod_status_terminating() {
        let mut p = pod(
            json!({"containers": [{"name": "a"}]}),
            json!({"phase": "Running", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 0, "state": {"running": {}}},
            ]}),
        );
        p["metadata"]["deletionTimestamp"] = json!(ago(5));
        check_pod(p.clone(), expect![[r#""1/1" "Terminating" "0""#]]);
        p["status"]["reason"] = json!("NodeLost");
        check_pod(p.clone(), expect![[r#""1/1" "Unknown" "0""#]]);
        // A terminal pod being deleted keeps its final status.
        let mut done = pod(json!({"containers": [{"name": "a"}]}), json!({"phase": "Succeeded"}));
        done["metadata"]["deletionTimestamp"] = json!(ago(5));
        check_pod(done, expect![[r#""0/1" "Succeeded" "0""#]]);
    }

    #[test]
    fn pod_status_init_containers() {
        let spec = json!({"initContainers": [{"name": "i1"}, {"name": "i2"}], "containers": [{"name": "a"}]});
        check_pod(
            pod(
                spec.clone(),
                json!({"phase": "Pending", "initContainerStatuses": [
                    {"name": "i1", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                    {"name": "i2", "ready": false, "restartCount": 0, "state": {"running": {}}},
                ]}),
            ),
            expect![[r#""0/1" "Init:1/2" "0""#]],
        );
        check_pod(
            pod(
                spec.clone(),
                json!({"phase": "Pending", "initContainerStatuses": [
                    {"name": "i1", "ready": false, "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                     "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(30)}}},
                ]}),
            ),
            expect![[r#""0/1" "Init:CrashLoopBackOff" "3 (30s ago)""#]],
        );
        check_pod(
            pod(
                spec.clone(),
                json!({"phase": "Pending", "initContainerStatuses": [
                    {"name": "i1", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 2}}},
                ]}),
            ),
            expect![[r#""0/1" "Init:ExitCode:2" "0""#]],
        );
        check_pod(
            pod(
                spec.clone(),
                json!({"phase": "Pending", "initContainerStatuses": [
                    {"name": "i1", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}},
                ]}),
            ),
            expect![[r#""0/1" "Init:0/2" "0""#]],
        );
        // A sidecar (restartPolicy: Always) counts as a container once started.
        let sidecar = json!({"initContainers": [{"name": "proxy", "restartPolicy": "Always"}], "containers": [{"name": "a"}]});
        check_pod(
            pod(
                sidecar,
                json!({"phase": "Running", "conditions": [{"type": "Initialized", "status": "True"}],
                    "initContainerStatuses": [
                        {"name": "proxy", "ready": true, "started": true, "restartCount": 1, "state": {"running": {}},
                         "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(4000)}}},
                    ],
                    "containerStatuses": [{"name": "a", "ready": true, "restartCount": 0, "state": {"running": {}}}],
                }),
            ),
            expect![[r#""2/2" "Running" "1 (66m ago)""#]],
        );
    }

    #[test]
    fn node_cells_and_roles() {
        check(
            "",
            "Node",
            json!({
                "metadata": {"name": "n1", "creationTimestamp": ago(3 * 86400 + 7200),
                             "labels": {"node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/": "",
                                        "kubernetes.io/role": "edge"}},
                "spec": {"unschedulable": true},
                "status": {"conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
                           "addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "192.168.1.10"}],
                           "nodeInfo": {"kubeletVersion": "v1.33.0", "osImage": "Debian GNU/Linux 12 (bookworm)"}},
            }),
            expect![[r#"
                Name: "n1"
                Status: "Ready,SchedulingDisabled"
                Roles: "control-plane,edge"
                Age: "3d2h"
                Version: "v1.33.0"
                Internal-IP: "192.168.1.10"
                External-IP: "<none>"
                OS-Image: "Debian GNU/Linux 12 (bookworm)"
                Kernel-Version: "<unknown>"
                Container-Runtime: "<unknown>""#]],
        );
    }

    #[test]
    fn service_cells_by_type() {
        let svc = |spec: Value, status: Value| {
            let c = cells(
                "",
                "Service",
                &json!({"metadata": {"name": "s"}, "spec": spec, "status": status}),
                now(),
            );
            format!("{} {} {} {} {}", c[1], c[2], c[3], c[4], c[6])
        };
        expect![[r#""ClusterIP" "10.96.0.10" "<none>" "53/UDP,53/TCP" "app=x,k8s-app=dns""#]].assert_eq(&svc(
            json!({"clusterIPs": ["10.96.0.10"], "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53}],
                   "selector": {"k8s-app": "dns", "app": "x"}}),
            json!({}),
        ));
        expect![[r#""NodePort" "10.96.0.11" "1.2.3.4" "80:30080/TCP" "<none>""#]].assert_eq(&svc(
            json!({"type": "NodePort", "clusterIP": "10.96.0.11", "externalIPs": ["1.2.3.4"],
                   "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]}),
            json!({}),
        ));
        expect![[r#""LoadBalancer" "10.96.0.12" "<pending>" "443:31443/TCP" "<none>""#]].assert_eq(&svc(
            json!({"type": "LoadBalancer", "clusterIPs": ["10.96.0.12"], "ports": [{"port": 443, "nodePort": 31443}]}),
            json!({}),
        ));
        expect![[r#""LoadBalancer" "10.96.0.12" "5.5.5.5,lb.example.com,9.9.9.9" "<none>" "<none>""#]].assert_eq(&svc(
            json!({"type": "LoadBalancer", "clusterIPs": ["10.96.0.12"], "externalIPs": ["9.9.9.9"]}),
            json!({"loadBalancer": {"ingress": [{"hostname": "lb.example.com"}, {"ip": "5.5.5.5"}, {"ip": "5.5.5.5"}]}}),
        ));
        expect![[r#""ExternalName" "<none>" "db.example.com" "<none>" "<none>""#]].assert_eq(&svc(
            json!({"type": "ExternalName", "externalName": "db.example.com"}),
            json!({}),
        ));
    }

    #[test]
    fn workload_cells() {
        let template = json!({"spec": {"containers": [{"name": "web", "image": "nginx:1"}, {"name": "log", "image": "busybox"}]}});
        check(
            "apps",
            "Deployment",
            json!({"metadata": {"name": "web", "creationTimestamp": ago(3 * 3600 + 5 * 60)},
                   "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": template},
                   "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}}),
            expect![[r#"
                Name: "web"
                Ready: "2/3"
                Up-to-date: 3
                Available: 2
                Age: "3h5m"
                Containers: "web,log"
                Images: "nginx:1,busybox"
                Selector: "app=web""#]],
        );
        check(
            "apps",
            "ReplicaSet",
            json!({"metadata": {"name": "web-abc", "creationTimestamp": ago(90)},
                   "spec": {"selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]}, "template": template},
                   "status": {"replicas": 1}}),
            expect![[r#"
                Name: "web-abc"
                Desired: 1
                Current: 1
                Ready: 0
                Age: "90s"
                Containers: "web,log"
                Images: "nginx:1,busybox"
                Selector: "app in (web)""#]],
        );
        check(
            "apps",
            "ControllerRevision",
            json!({"metadata": {"name": "ds-1", "creationTimestamp": ago(60),
                                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "ds", "controller": true}]},
                   "revision": 2}),
            expect![[r#"
                Name: "ds-1"
                Controller: "daemonset.apps/ds"
                Revision: 2
                Age: "60s""#]],
        );
        check(
            "batch",
            "Job",
            json!({"metadata": {"name": "pi", "creationTimestamp": ago(400)},
                   "spec": {"completions": 3, "selector": {"matchLabels": {"job": "pi"}}, "template": template},
                   "status": {"succeeded": 3, "startTime": ago(400), "completionTime": ago(210),
                              "conditions": [{"type": "Complete", "status": "True"}]}}),
            expect![[r#"
                Name: "pi"
                Status: "Complete"
                Completions: "3/3"
                Duration: "3m10s"
                Age: "6m40s"
                Containers: "web,log"
                Images: "nginx:1,busybox"
                Selector: "job=pi""#]],
        );
    }

    #[test]
    fn more_workload_cells() {
        let template = json!({"spec": {"containers": [{"name": "agent", "image": "agent:2"}],
                                       "nodeSelector": {"kubernetes.io/os": "linux"}}});
        check(
            "apps",
            "StatefulSet",
            json!({"metadata": {"name": "db"}, "spec": {"replicas": 3, "template": template},
                   "status": {"readyReplicas": 1}}),
            expect![[r#"
                Name: "db"
                Ready: "1/3"
                Age: "<unknown>"
                Containers: "agent"
                Images: "agent:2""#]],
        );
        check(
            "apps",
            "DaemonSet",
            json!({"metadata": {"name": "agent"},
                   "spec": {"selector": {"matchLabels": {"app": "agent"}}, "template": template},
                   "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 2,
                              "updatedNumberScheduled": 3, "numberAvailable": 2}}),
            expect![[r#"
                Name: "agent"
                Desired: 3
                Current: 3
                Ready: 2
                Up-to-date: 3
                Available: 2
                Node Selector: "kubernetes.io/os=linux"
                Age: "<unknown>"
                Containers: "agent"
                Images: "agent:2"
                Selector: "app=agent""#]],
        );
        check(
            "batch",
            "CronJob",
            json!({"metadata": {"name": "nightly"},
                   "spec": {"schedule": "0 3 * * *", "suspend": false,
                            "jobTemplate": {"spec": {"template": template}}},
                   "status": {"active": [{"name": "nightly-1"}], "lastScheduleTime": ago(300)}}),
            expect![[r#"
                Name: "nightly"
                Schedule: "0 3 * * *"
                Timezone: "<none>"
                Suspend: "False"
                Active: 1
                Last Schedule: "5m"
                Age: "<unknown>"
                Containers: "agent"
                Images: "agent:2"
                Selector: "<none>""#]],
        );
        // A running job with parallelism and no completions: its duration runs until now.
        check(
            "batch",
            "Job",
            json!({"metadata": {"name": "work"}, "spec": {"parallelism": 2},
                   "status": {"succeeded": 1, "startTime": ago(30)}}),
            expect![[r#"
                Name: "work"
                Status: "Running"
                Completions: "1/1 of 2"
                Duration: "30s"
                Age: "<unknown>"
                Containers: ""
                Images: ""
                Selector: "<none>""#]],
        );
    }

    #[test]
    fn small_kinds() {
        check(
            "",
            "Namespace",
            json!({"metadata": {"name": "default", "creationTimestamp": ago(5)}, "status": {"phase": "Active"}}),
            expect![[r#"
                Name: "default"
                Status: "Active"
                Age: "5s""#]],
        );
        check(
            "",
            "ConfigMap",
            json!({"metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}, "binaryData": {"c": ""}}),
            expect![[r#"
                Name: "c"
                Data: 3
                Age: "<unknown>""#]],
        );
        check(
            "",
            "Secret",
            json!({"metadata": {"name": "s"}, "type": "Opaque", "data": {"a": "MQ=="}}),
            expect![[r#"
                Name: "s"
                Type: "Opaque"
                Data: 1
                Age: "<unknown>""#]],
        );
        check(
            "",
            "ServiceAccount",
            json!({"metadata": {"name": "default"}}),
            expect![[r#"
            Name: "default"
            Secrets: 0
            Age: "<unknown>""#]],
        );
        check(
            "coordination.k8s.io",
            "Lease",
            json!({"metadata": {"name": "l"}, "spec": {"holderIdentity": "node-1"}}),
            expect![[r#"
                Name: "l"
                Holder: "node-1"
                Age: "<unknown>""#]],
        );
        check(
            "apiextensions.k8s.io",
            "CustomResourceDefinition",
            json!({"metadata": {"name": "clonesets.apps.kruise.io", "creationTimestamp": "2024-04-30T01:02:03.5Z"}}),
            expect![[r#"
                Name: "clonesets.apps.kruise.io"
                Created At: "2024-04-30T01:02:03Z""#]],
        );
        check(
            "example.com",
            "Widget",
            json!({"metadata": {"name": "w"}}),
            expect![[r#"
            Name: "w"
            Age: "<unknown>""#]],
        );
    }

    #[test]
    fn storage_kinds() {
        check(
            "",
            "PersistentVolumeClaim",
            json!({"metadata": {"name": "data"}, "spec": {"volumeName": "pvc-1",
                "storageClassName": "local-path", "volumeMode": "Filesystem",
                "resources": {"requests": {"storage": "1Gi"}}},
                "status": {"phase": "Bound", "capacity": {"storage": "2Gi"},
                "accessModes": ["ReadWriteMany", "ReadWriteOnce"]}}),
            expect![[r#"
                Name: "data"
                Status: "Bound"
                Volume: "pvc-1"
                Capacity: "2Gi"
                Access Modes: "RWO,RWX"
                StorageClass: "local-path"
                VolumeAttributesClass: "<unset>"
                Age: "<unknown>"
                VolumeMode: "Filesystem""#]],
        );
        check(
            "",
            "PersistentVolumeClaim",
            json!({"metadata": {"name": "p", "deletionTimestamp": "2024-01-01T00:00:00Z"},
                "spec": {"resources": {"requests": {"storage": "1Gi"}}}, "status": {"phase": "Pending"}}),
            expect![[r#"
                Name: "p"
                Status: "Terminating"
                Volume: ""
                Capacity: ""
                Access Modes: ""
                StorageClass: ""
                VolumeAttributesClass: "<unset>"
                Age: "<unknown>"
                VolumeMode: "<unset>""#]],
        );
        check(
            "",
            "PersistentVolume",
            json!({"metadata": {"name": "pv1"}, "spec": {"capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"], "persistentVolumeReclaimPolicy": "Delete",
                "claimRef": {"namespace": "default", "name": "data"}, "storageClassName": "local-path",
                "volumeMode": "Filesystem"}, "status": {"phase": "Bound"}}),
            expect![[r#"
                Name: "pv1"
                Capacity: "1Gi"
                Access Modes: "RWO"
                Reclaim Policy: "Delete"
                Status: "Bound"
                Claim: "default/data"
                StorageClass: "local-path"
                VolumeAttributesClass: "<unset>"
                Reason: ""
                Age: "<unknown>"
                VolumeMode: "Filesystem""#]],
        );
        check(
            "storage.k8s.io",
            "StorageClass",
            json!({"metadata": {"name": "local-path", "annotations":
                {"storageclass.kubernetes.io/is-default-class": "true"}},
                "provisioner": "kinetic.dev/local-path", "volumeBindingMode": "WaitForFirstConsumer"}),
            expect![[r#"
                Name: "local-path (default)"
                Provisioner: "kinetic.dev/local-path"
                ReclaimPolicy: "Delete"
                VolumeBindingMode: "WaitForFirstConsumer"
                AllowVolumeExpansion: false
                Age: "<unknown>""#]],
        );
    }

    #[test]
    fn endpoints_and_slices() {
        check(
            "",
            "Endpoints",
            json!({"metadata": {"name": "web"}, "subsets": [
                {"addresses": [{"ip": "10.0.0.1"}, {"ip": "fd00::2"}], "ports": [{"port": 80}, {"port": 443}]},
            ]}),
            expect![[r#"
                Name: "web"
                Endpoints: "10.0.0.1:80,[fd00::2]:80,10.0.0.1:443 + 1 more..."
                Age: "<unknown>""#]],
        );
        check(
            "",
            "Endpoints",
            json!({"metadata": {"name": "none"}}),
            expect![[r#"
            Name: "none"
            Endpoints: "<none>"
            Age: "<unknown>""#]],
        );
        check(
            "discovery.k8s.io",
            "EndpointSlice",
            json!({"metadata": {"name": "web-x"}, "addressType": "IPv4",
                   "ports": [{"port": 80}, {"name": "https"}, {}, {"port": 8080}],
                   "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}]}),
            expect![[r#"
                Name: "web-x"
                AddressType: "IPv4"
                Ports: "80,https,* + 1 more..."
                Endpoints: "10.0.0.1,10.0.0.2"
                Age: "<unknown>""#]],
        );
        check(
            "discovery.k8s.io",
            "EndpointSlice",
            json!({"metadata": {"name": "empty"}, "addressType": "IPv4"}),
            expect![[r#"
                Name: "empty"
                AddressType: "IPv4"
                Ports: "<unset>"
                Endpoints: "<unset>"
                Age: "<unknown>""#]],
        );
    }

    #[test]
    fn events_core_and_events_api() {
        check(
            "",
            "Event",
            json!({"metadata": {"name": "web-0.17a"}, "type": "Warning", "reason": "BackOff",
                   "involvedObject": {"kind": "Pod", "name": "web-0", "fieldPath": "spec.containers{web}"},
                   "source": {"component": "kubelet", "host": "node-1"}, "message": " Back-off restarting \n",
                   "firstTimestamp": ago(3600), "lastTimestamp": ago(30), "count": 12}),
            expect![[r#"
                Last Seen: "30s"
                Type: "Warning"
                Reason: "BackOff"
                Object: "pod/web-0"
                Subobject: "spec.containers{web}"
                Source: "kubelet, node-1"
                Message: "Back-off restarting"
                First Seen: "60m"
                Count: 12
                Name: "web-0.17a""#]],
        );
        check(
            "events.k8s.io",
            "Event",
            json!({"metadata": {"name": "e"}, "type": "Normal", "reason": "Scheduled",
                   "regarding": {"kind": "Pod", "name": "web-1"}, "note": "Successfully assigned",
                   "reportingController": "default-scheduler", "eventTime": "2024-05-01T11:59:50.000000Z"}),
            expect![[r#"
                Last Seen: "10s"
                Type: "Normal"
                Reason: "Scheduled"
                Object: "pod/web-1"
                Subobject: ""
                Source: "default-scheduler"
                Message: "Successfully assigned"
                First Seen: "10s"
                Count: 1
                Name: "e""#]],
        );
    }

    #[test]
    fn crd_columns() {
        check_columns(
            &custom_columns(&Value::Null),
            expect![[r#"
            Name (string, "name", 0)
            Age (date, "", 0) .metadata.creationTimestamp"#]],
        );
        check_columns(
            &custom_columns(&json!([])),
            expect![[r#"
            Name (string, "name", 0)
            Age (date, "", 0) .metadata.creationTimestamp"#]],
        );
        let cols = custom_columns(&json!([
            {"name": "Desired", "type": "integer", "jsonPath": ".spec.replicas"},
            {"name": "Image", "type": "string", "jsonPath": ".spec.containers[0].image", "priority": 1},
            {"name": "App", "type": "string", "jsonPath": ".metadata.labels.app"},
            {"name": "Owner", "type": "string", "jsonPath": ".metadata.annotations['example.com/owner']"},
            {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"},
            {"name": "Last", "type": "string", "jsonPath": ".spec.containers[-1].name"},
            {"name": "Ratio", "type": "number", "jsonPath": ".status.ratio"},
            {"name": "Paused", "type": "boolean", "jsonPath": ".spec.paused"},
            {"name": "Ports", "type": "string", "jsonPath": ".spec.ports"},
            {"name": "Missing", "type": "string", "jsonPath": ".status.nothing"},
            {"name": "Wrong Type", "type": "integer", "jsonPath": ".metadata.name"},
            {"name": "Slice", "type": "string", "jsonPath": ".spec.containers[0:1]"},
            {"name": "Created", "type": "date", "jsonPath": ".metadata.creationTimestamp",
             "description": "When it was made"},
        ]));
        check_columns(
            &cols,
            expect![[r#"
            Name (string, "name", 0)
            Desired (integer, "", 0) .spec.replicas
            Image (string, "", 1) .spec.containers[0].image
            App (string, "", 0) .metadata.labels.app
            Owner (string, "", 0) .metadata.annotations['example.com/owner']
            Ready (string, "", 0) .status.conditions[?(@.type=="Ready")].status
            Last (string, "", 0) .spec.containers[-1].name
            Ratio (number, "", 0) .status.ratio
            Paused (boolean, "", 0) .spec.paused
            Ports (string, "", 0) .spec.ports
            Missing (string, "", 0) .status.nothing
            Wrong Type (integer, "", 0) .metadata.name
            Slice (string, "", 0) .spec.containers[0:1]
            Created (date, "", 0) .metadata.creationTimestamp"#]],
        );
        let obj = json!({
            "metadata": {"name": "w1", "creationTimestamp": ago(7200 + 60),
                         "labels": {"app": "web"}, "annotations": {"example.com/owner": "team-a"}},
            "spec": {"replicas": 3, "paused": false,
                     "containers": [{"name": "main", "image": "nginx:1.27"}, {"name": "side", "image": "envoy"}],
                     "ports": [{"port": 80, "name": "http"}]},
            "status": {"ratio": 0.5, "conditions": [{"type": "Synced", "status": "True"}, {"type": "Ready", "status": "False"}]},
        });
        check_row(
            &cols,
            &custom_cells(&cols, &obj, now()),
            expect![[r#"
            Name: "w1"
            Desired: 3
            Image: "nginx:1.27"
            App: "web"
            Owner: "team-a"
            Ready: "False"
            Last: "side"
            Ratio: 0.5
            Paused: false
            Ports: "[{\"name\":\"http\",\"port\":80}]"
            Missing: null
            Wrong Type: null
            Slice: null
            Created: "121m""#]],
        );
        let descriptions: Vec<&str> =
            cols.iter().skip(1).step_by(12).map(|c| c.description.as_str()).collect();
        expect![[r#"
            [
                "Custom resource definition column (in JSONPath format): .spec.replicas",
                "When it was made",
            ]
        "#]]
        .assert_debug_eq(&descriptions);
    }

    /// Regression: a quoted key with `\.` escapes (Knative's Revision printer columns) found
    /// nothing, so `kubectl get revision` printed empty CONFIG NAME and GENERATION columns.
    #[test]
    fn crd_columns_quoted_key_with_escaped_dots() {
        let cols = custom_columns(&json!([
            {"name": "Config Name", "type": "string",
             "jsonPath": ".metadata.labels['serving\\.knative\\.dev/configuration']"},
            {"name": "Generation", "type": "string",
             "jsonPath": ".metadata.labels[\"serving\\.knative\\.dev/configurationGeneration\"]"},
        ]));
        let obj = json!({"metadata": {"name": "hello-00001", "labels": {
            "serving.knative.dev/configuration": "hello",
            "serving.knative.dev/configurationGeneration": "1",
        }}});
        check_row(
            &cols,
            &custom_cells(&cols, &obj, now()),
            expect![[r#"
            Name: "hello-00001"
            Config Name: "hello"
            Generation: "1""#]],
        );
    }

    #[test]
    fn crd_cells_typed_values() {
        let cols = custom_columns(&json!([
            {"name": "I", "type": "integer", "jsonPath": ".a"},
            {"name": "S", "type": "string", "jsonPath": ".a"},
            {"name": "N", "type": "number", "jsonPath": ".a"},
            {"name": "Big", "type": "string", "jsonPath": ".big"},
            {"name": "Small", "type": "string", "jsonPath": ".small"},
            {"name": "Null", "type": "string", "jsonPath": ".nil"},
            {"name": "Map", "type": "string", "jsonPath": ".m"},
            {"name": "Bad date", "type": "date", "jsonPath": ".d"},
            {"name": "Any", "type": "string", "jsonPath": ".m.*"},
            {"name": "Escaped", "type": "string", "jsonPath": ".m.x\\.y"},
        ]));
        let obj = json!({"metadata": {"name": "x"}, "a": 2.75, "big": 1e21, "small": 0.00001, "nil": null,
                         "m": {"z": 1, "b": [true], "x.y": "dotted"}, "d": "yesterday"});
        check_row(
            &cols,
            &custom_cells(&cols, &obj, now()),
            expect![[r#"
            Name: "x"
            I: 2
            S: "2.75"
            N: 2.75
            Big: "1e+21"
            Small: "1e-05"
            Null: "<no value>"
            Map: "{\"b\":[true],\"x.y\":\"dotted\",\"z\":1}"
            Bad date: "<invalid>"
            Any: "1"
            Escaped: "dotted""#]],
        );
    }

    #[test]
    fn table_object() {
        let cols = columns("", "ConfigMap");
        let obj =
            json!({"metadata": {"name": "c", "creationTimestamp": ago(10)}, "data": {"k": "v"}});
        let row = cells("", "ConfigMap", &obj, now());
        let mut t =
            table(&cols, vec![(row, json!({"kind": "PartialObjectMetadata"}))], "42", Some("tok"));
        // The descriptions are long and checked elsewhere.
        for c in t["columnDefinitions"].as_array_mut().into_iter().flatten() {
            c["description"] = json!("...");
        }
        expect![[r#"
            {
              "kind": "Table",
              "apiVersion": "meta.k8s.io/v1",
              "metadata": {
                "resourceVersion": "42",
                "continue": "tok"
              },
              "columnDefinitions": [
                {
                  "name": "Name",
                  "type": "string",
                  "format": "name",
                  "description": "...",
                  "priority": 0
                },
                {
                  "name": "Data",
                  "type": "string",
                  "format": "",
                  "description": "...",
                  "priority": 0
                },
                {
                  "name": "Age",
                  "type": "string",
                  "format": "",
                  "description": "...",
                  "priority": 0
                }
              ],
              "rows": [
                {
                  "cells": [
                    "c",
                    1,
                    "10s"
                  ],
                  "object": {
                    "kind": "PartialObjectMetadata"
                  }
                }
              ]
            }"#]]
        .assert_eq(&serde_json::to_string_pretty(&t).expect("serializes"));
        let empty = table(&cols, Vec::new(), "", None);
        expect!["{}"].assert_eq(&empty["metadata"].to_string());
    }

    #[test]
    fn human_duration_boundaries() {
        // Seconds either side of each unit change.
        let cases = [-3, -2, -1].into_iter().chain([
            0, 1, 59, 119, 120, 121, 179, 599, 600, 601, 3599, 10799, 10800, 10860, 28799, 28800,
            172799, 172800, 176400, 691199, 691200, 63071999, 63072000, 63158400, 252287999,
            252288000,
        ]);
        let actual: Vec<String> = cases
            .map(|s| format!("{s}s -> {}", human_duration(SignedDuration::from_secs(s))))
            .collect();
        expect![[r#"
            -3s -> <invalid>
            -2s -> <invalid>
            -1s -> 0s
            0s -> 0s
            1s -> 1s
            59s -> 59s
            119s -> 119s
            120s -> 2m
            121s -> 2m1s
            179s -> 2m59s
            599s -> 9m59s
            600s -> 10m
            601s -> 10m
            3599s -> 59m
            10799s -> 179m
            10800s -> 3h
            10860s -> 3h1m
            28799s -> 7h59m
            28800s -> 8h
            172799s -> 47h
            172800s -> 2d
            176400s -> 2d1h
            691199s -> 7d23h
            691200s -> 8d
            63071999s -> 729d
            63072000s -> 2y
            63158400s -> 2y1d
            252287999s -> 7y364d
            252288000s -> 8y"#]]
        .assert_eq(&actual.join("\n"));
        // Fractions of a second truncate toward zero, as Go's int(d.Seconds()).
        assert_eq!(human_duration(SignedDuration::from_millis(-1999)), "0s");
        assert_eq!(human_duration(SignedDuration::from_millis(119_999)), "119s");
    }
}
