//! Pure Kubernetes API machinery shared by the API server and, later, the controllers.
//!
//! Everything here is a function of its inputs: no I/O, no async, no clocks except where a
//! caller passes `now` in. The API server (`kinetic-apiserver`) owns storage and HTTP and calls
//! into these modules to interpret requests:
//!
//! - [`patch`]: JSON patch (RFC 6902), JSON merge patch (RFC 7386) and Kubernetes strategic
//!   merge patch for the built-in kinds.
//! - [`selector`]: label selectors (equality and set-based) and field selectors.
//! - [`schema`]: structural schemas (CRD `openAPIV3Schema` or the built-in types' schemas):
//!   validation with field causes, pruning of unknown fields, defaulting.
//! - [`openapi`]: the `/openapi/v2` and `/openapi/v3` documents kubectl reads.
//! - [`printers`]: `meta.k8s.io/v1` Table columns and cells as `kubectl get` prints them.
//! - [`quantity`]: resource quantities (`100m`, `64Mi`) in milli-units or whole units.
//! - [`ssa`]: server-side apply: field sets (`managedFields`), the structured merge of an
//!   applied configuration by list and map types, ownership and conflicts.
//! - [`protobuf`]: decoding of `application/vnd.kubernetes.protobuf` request bodies (what
//!   kubectl sends for built-in kinds) into the JSON of the same object.
//!
//! - [`cron`]: CronJob schedules (robfig/cron's standard syntax) and their next activation in a
//!   time zone.
//!
//! What it does not do: decide anything about storage, versions or authentication.

pub mod cron;
pub mod openapi;
pub mod patch;
pub mod printers;
pub mod protobuf;
pub mod quantity;
pub mod schema;
pub mod selector;
pub mod ssa;
