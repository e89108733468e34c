//! API errors as Kubernetes `Status` objects, with upstream's reasons, codes and wording so
//! kubectl and client-go classify them (`IsNotFound`, `IsConflict`, ...) exactly as on a real
//! cluster.

use serde_json::{Value, json};

/// One field problem in an `Invalid` status (`details.causes[]`), shared with the schema checks.
pub use kinetic_machinery::schema::FieldCause as Cause;

/// `Invalid value: "v": detail` for a string value, the common case in hand-written validation.
pub fn invalid(field: &str, value: &str, detail: &str) -> Cause {
    Cause::invalid(field, &Value::String(value.to_owned()), detail)
}

#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.reason, self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

pub type ApiResult<T> = Result<T, ApiError>;

pub(crate) fn details(group: &str, kind: &str, name: &str) -> Value {
    let mut d = json!({"name": name, "kind": kind});
    if !group.is_empty() {
        d["group"] = json!(group);
    }
    d
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self { code, reason, message: message.into(), details: None }
    }

    /// `plural "name" not found` (upstream: `pods "web" not found`).
    pub fn not_found(group: &str, plural: &str, name: &str) -> Self {
        let gr = if group.is_empty() { plural.to_owned() } else { format!("{plural}.{group}") };
        Self {
            code: 404,
            reason: "NotFound",
            message: format!("{gr} \"{name}\" not found"),
            details: Some(details(group, plural, name)),
        }
    }

    pub fn already_exists(group: &str, plural: &str, name: &str) -> Self {
        let gr = if group.is_empty() { plural.to_owned() } else { format!("{plural}.{group}") };
        Self {
            code: 409,
            reason: "AlreadyExists",
            message: format!("{gr} \"{name}\" already exists"),
            details: Some(details(group, plural, name)),
        }
    }

    pub fn conflict(group: &str, plural: &str, name: &str, why: &str) -> Self {
        let gr = if group.is_empty() { plural.to_owned() } else { format!("{plural}.{group}") };
        Self {
            code: 409,
            reason: "Conflict",
            message: format!("Operation cannot be fulfilled on {gr} \"{name}\": {why}"),
            details: Some(details(group, plural, name)),
        }
    }

    pub fn stale(group: &str, plural: &str, name: &str) -> Self {
        Self::conflict(
            group,
            plural,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// `Kind "name" is invalid: field: message` with every cause in `details.causes`.
    pub fn invalid(kind: &str, group: &str, name: &str, causes: Vec<Cause>) -> Self {
        let summary: Vec<String> = causes
            .iter()
            .map(|c| {
                if c.field.is_empty() {
                    c.message.clone()
                } else {
                    format!("{}: {}", c.field, c.message)
                }
            })
            .collect();
        let joined = if summary.len() == 1 {
            summary.into_iter().next().unwrap_or_default()
        } else {
            format!("[{}]", summary.join(", "))
        };
        let gk = if group.is_empty() { kind.to_owned() } else { format!("{kind}.{group}") };
        let mut d = details(group, kind, name);
        d["causes"] = Value::Array(
            causes
                .into_iter()
                .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                .collect(),
        );
        Self {
            code: 422,
            reason: "Invalid",
            message: format!("{gk} \"{name}\" is invalid: {joined}"),
            details: Some(d),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    }

    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(415, "UnsupportedMediaType", message)
    }

    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Self::new(406, "NotAcceptable", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    pub fn page_not_found() -> Self {
        Self::new(404, "NotFound", "the server could not find the requested resource")
    }

    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

/// Maps a store failure on `key` to the API error upstream returns for it.
pub fn from_store(res: &crate::registry::Resource, e: crate::store::StoreError) -> ApiError {
    use crate::store::StoreError as S;
    match e {
        S::AlreadyExists(k) => ApiError::already_exists(&res.group, &res.plural, &k.name),
        S::NotFound(k) => ApiError::not_found(&res.group, &res.plural, &k.name),
        S::Conflict { key, .. } => ApiError::stale(&res.group, &res.plural, &key.name),
        S::UidMismatch { key, expected, actual } => ApiError::conflict(
            &res.group,
            &res.plural,
            &key.name,
            &format!(
                "Precondition failed: UID in precondition: {expected}, UID in object meta: {actual}"
            ),
        ),
        other => {
            tracing::error!(error = %other, "store failure");
            ApiError::internal(format!("{:#}", DisplayChain(&other)))
        }
    }
}

/// Formats an error with its sources, `a: b: c`.
pub struct DisplayChain<'a>(pub &'a dyn std::error::Error);

impl std::fmt::Display for DisplayChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut src = self.0.source();
        while let Some(s) = src {
            write!(f, ": {s}")?;
            src = s.source();
        }
        Ok(())
    }
}
