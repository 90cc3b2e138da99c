//! API errors, rendered as `metav1.Status` with the upstream reason and code so kubectl prints
//! `Error from server (Reason): message`.

use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    Status {
        code: u16,
        reason: &'static str,
        message: String,
        details: Option<Value>,
    },
    #[error("storage: {0}")]
    Storage(#[from] tonic::Status),
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Names a resource in error details: `{"name", "group", "kind"}` where kind is the plural resource.
pub struct Target<'a> {
    pub group: &'a str,
    pub resource: &'a str,
    pub name: &'a str,
}

impl Target<'_> {
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.resource.to_string()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }
    pub fn details(&self) -> Value {
        json!({"name": self.name, "group": self.group, "kind": self.resource})
    }
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError::Status {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }
    pub fn not_found(t: &Target) -> Self {
        ApiError::Status {
            code: 404,
            reason: "NotFound",
            message: format!("{} \"{}\" not found", t.qualified(), t.name),
            details: Some(t.details()),
        }
    }
    pub fn already_exists(t: &Target) -> Self {
        ApiError::Status {
            code: 409,
            reason: "AlreadyExists",
            message: format!("{} \"{}\" already exists", t.qualified(), t.name),
            details: Some(t.details()),
        }
    }
    pub fn conflict(t: &Target, why: &str) -> Self {
        ApiError::Status {
            code: 409,
            reason: "Conflict",
            message: format!(
                "Operation cannot be fulfilled on {} \"{}\": {why}",
                t.qualified(),
                t.name
            ),
            details: Some(t.details()),
        }
    }
    /// 422 Invalid as upstream's NewInvalid words it: `Kind.group "name" is invalid: [a, b]` (no brackets
    /// for one cause), each cause with the reason its error type has upstream.
    pub fn invalid(kind: &str, group: &str, name: &str, causes: Vec<(String, String)>) -> Self {
        let qualified = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let msgs: Vec<String> = causes.iter().map(|(f, m)| format!("{f}: {m}")).collect();
        let joined = match msgs.len() {
            1 => msgs.concat(),
            _ => format!("[{}]", msgs.join(", ")),
        };
        let causes: Vec<Value> = causes
            .into_iter()
            .map(|(field, message)| {
                let reason = if message.starts_with("Required value") {
                    "FieldValueRequired"
                } else if message.starts_with("Unsupported value") {
                    "FieldValueNotSupported"
                } else if message.starts_with("Forbidden") {
                    "FieldValueForbidden"
                } else if message.starts_with("Duplicate value") {
                    "FieldValueDuplicate"
                } else {
                    "FieldValueInvalid"
                };
                json!({"reason": reason, "message": message, "field": field})
            })
            .collect();
        ApiError::Status {
            code: 422,
            reason: "Invalid",
            message: format!("{qualified} {name:?} is invalid: {joined}"),
            details: Some(json!({"name": name, "group": group, "kind": kind, "causes": causes})),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }
    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    pub fn code(&self) -> u16 {
        match self {
            ApiError::Status { code, .. } => *code,
            ApiError::Storage(_) => 500,
        }
    }

    /// The `metav1.Status` object for this error.
    pub fn status(&self) -> Value {
        let (code, reason, message, details) = match self {
            ApiError::Status {
                code,
                reason,
                message,
                details,
            } => (*code, *reason, message.clone(), details.clone()),
            ApiError::Storage(s) => (500, "InternalError", format!("storage error: {}", s.message()), None),
        };
        let mut v = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason, "code": code,
        });
        if let (Some(d), Some(o)) = (details, v.as_object_mut()) {
            o.insert("details".into(), d);
        }
        v
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Storage(s) = &self {
            tracing::warn!(error = %s, "storage error");
        }
        // The same negotiation as any object answer: protobuf Status to clients that prefer it.
        crate::handlers::json_response(self.code(), &self.status())
    }
}
