//! Table tests of the KPA decisions: the ConfigMap, the annotations, and scaling scenarios
//! driven second by second with a fixed clock.

mod annotations;
mod config;
mod scale;
