//! Lifecycle hook checks (`pkg/util/lifecycle/lifecycle_utils.go`): whether a user's hook holds
//! a pod, so the controller moves it to a `Preparing*` state instead of acting on it.

use k8s_openapi::api::core::v1::Pod;
use kinetic_api::kruise::{Lifecycle, LifecycleHook};

use crate::pod;

fn has_finalizer(p: &Pod, f: &str) -> bool {
    p.metadata.finalizers.iter().flatten().any(|x| x == f)
}

/// Whether `hook` holds the pod at all: any of its finalizers is on the pod, or any of its
/// labels is on the pod with its value (upstream's `IsPodHooked`). A missing hook holds
/// nothing.
pub fn is_pod_hooked(hook: Option<&LifecycleHook>, p: &Pod) -> bool {
    let Some(hook) = hook else { return false };
    hook.finalizers_handler.iter().flatten().any(|f| has_finalizer(p, f))
        || hook.labels_handler.iter().flatten().any(|(k, v)| pod::label(p, k) == Some(v.as_str()))
}

/// Whether every finalizer and label of `hook` is on the pod (upstream's `IsPodAllHooked`): the
/// user's controller has put the hook (back) in place. A missing hook is never "all hooked".
pub fn is_pod_all_hooked(hook: Option<&LifecycleHook>, p: &Pod) -> bool {
    let Some(hook) = hook else { return false };
    hook.finalizers_handler.iter().flatten().all(|f| has_finalizer(p, f))
        && hook.labels_handler.iter().flatten().all(|(k, v)| pod::label(p, k) == Some(v.as_str()))
}

/// Whether the preDelete or the inPlaceUpdate hook asks to mark pods not ready
/// (`IsLifecycleMarkPodNotReady`); then a pod that entered PreparingDelete is never taken back.
pub fn marks_pod_not_ready(lifecycle: Option<&Lifecycle>) -> bool {
    let Some(l) = lifecycle else { return false };
    [l.pre_delete.as_ref(), l.in_place_update.as_ref()]
        .into_iter()
        .flatten()
        .any(|h| h.mark_pod_not_ready == Some(true))
}
