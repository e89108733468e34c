//! The hand-written watch cache and work queue the built-in controllers ([`crate::apps`],
//! [`crate::network`]) ran on before they moved onto kube-runtime like every other controller
//! of this crate; removed once the last of them has moved.

pub(crate) mod cache;
pub(crate) mod queue;
