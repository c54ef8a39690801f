//! Errors as the API server reports them: `meta/v1` `Status` objects.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::kube::resource::Resource;

/// One field-level reason inside a `Status`' `details.causes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Cause {
    pub reason: &'static str,
    pub field: String,
    /// The full message, as the API server writes it: `<field>: <detail>`.
    pub message: String,
}

impl Cause {
    pub(crate) fn new(reason: &'static str, field: impl Into<String>, detail: impl AsRef<str>) -> Cause {
        let field = field.into();
        let message = format!("{field}: {}", detail.as_ref());
        Cause {
            reason,
            field,
            message,
        }
    }

    pub(crate) fn required(field: impl Into<String>) -> Cause {
        Cause::new("FieldValueRequired", field, "Required value")
    }

    pub(crate) fn invalid(field: impl Into<String>, value: &Value, detail: impl AsRef<str>) -> Cause {
        Cause::new(
            "FieldValueInvalid",
            field,
            format!("Invalid value: {}: {}", show(value), detail.as_ref()),
        )
    }

    pub(crate) fn too_many(field: impl Into<String>, actual: usize, max: usize) -> Cause {
        Cause::new(
            "FieldValueTooMany",
            field,
            format!("Too many: {actual}: must have at most {max} items"),
        )
    }

    pub(crate) fn too_long(field: impl Into<String>, max: usize) -> Cause {
        Cause::new(
            "FieldValueTooLong",
            field,
            format!("Too long: may not be more than {max} bytes"),
        )
    }

    pub(crate) fn duplicate(field: impl Into<String>, value: &Value) -> Cause {
        Cause::new("FieldValueDuplicate", field, format!("Duplicate value: {value}"))
    }

    pub(crate) fn not_supported(field: impl Into<String>, value: &Value, allowed: &[&str]) -> Cause {
        let allowed: Vec<String> = allowed.iter().map(|a| format!("\"{a}\"")).collect();
        Cause::new(
            "FieldValueNotSupported",
            field,
            format!(
                "Unsupported value: {}: supported values: {}",
                show(value),
                allowed.join(", ")
            ),
        )
    }

    pub(crate) fn type_invalid(field: impl Into<String>, value: &Value, expected: &str) -> Cause {
        let field = field.into();
        let detail = format!(
            "Invalid value: \"{}\": {field} in body must be of type {expected}: \"{}\"",
            type_name(value),
            type_name(value)
        );
        Cause::new("FieldValueTypeInvalid", field, detail)
    }
}

/// How the API server quotes a value in an error message.
fn show(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        Value::Object(_) => "\"object\"".to_string(),
        Value::Array(_) => "\"array\"".to_string(),
        other => other.to_string(),
    }
}

pub(crate) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A failed request: rendered as a `Status` with the matching HTTP code.
#[derive(Clone, Debug)]
pub(crate) struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
    pub retry_after: Option<u32>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    fn with_details(mut self, details: Value) -> ApiError {
        self.details = Some(details);
        self
    }

    fn named(self, resource: Resource, name: &str) -> ApiError {
        self.with_details(json!({"name": name, "group": resource.group(), "kind": resource.plural()}))
    }

    /// A validating admission webhook said no: `403` with the webhook's name and reason,
    /// as the API server relays it.
    pub(crate) fn denied_by_webhook(webhook: &str, reason: &str) -> ApiError {
        ApiError::new(
            403,
            "Forbidden",
            format!("admission webhook \"{webhook}\" denied the request: {reason}"),
        )
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    /// What the real server answers a server-side apply carrying a field its schema does
    /// not declare, whatever `fieldValidation` says: the typed patch cannot be built, a
    /// `500` with no reason, naming the first such field.
    pub(crate) fn undeclared_field(resource: Resource, name: &str, path: &str) -> ApiError {
        ApiError::new(
            500,
            "",
            format!(
                "failed to create typed patch object (/{name}; {}, Kind={}): .{path}: field not declared in schema",
                resource.api_version(),
                resource.kind()
            ),
        )
    }

    pub(crate) fn not_found(resource: Resource, name: &str) -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", resource.qualified_plural()),
        )
        .named(resource, name)
    }

    pub(crate) fn path_not_found() -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_details(
            json!({"causes": [{"reason": "UnexpectedServerResponse", "message": "404 page not found"}]}),
        )
    }

    pub(crate) fn method_not_allowed(verb: &str) -> ApiError {
        ApiError::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({verb})"),
        )
    }

    pub(crate) fn already_exists(resource: Resource, name: &str) -> ApiError {
        ApiError::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", resource.qualified_plural()),
        )
        .named(resource, name)
    }

    /// An optimistic-concurrency failure: the object changed since the client read it.
    pub(crate) fn conflict(resource: Resource, name: &str, why: &str) -> ApiError {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                resource.qualified_plural()
            ),
        )
        .named(resource, name)
    }

    pub(crate) fn modified(resource: Resource, name: &str) -> ApiError {
        ApiError::conflict(
            resource,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// A server-side apply conflict, with one cause per conflicting field.
    pub(crate) fn apply_conflicts(conflicts: &[(String, String)], api_version: &str) -> ApiError {
        let n = conflicts.len();
        let mut by_manager: Vec<(&str, Vec<&str>)> = Vec::new();
        for (manager, field) in conflicts {
            match by_manager.iter_mut().find(|(m, _)| m == manager) {
                Some((_, fields)) => fields.push(field),
                None => by_manager.push((manager, vec![field])),
            }
        }
        let message = if n == 1 {
            let (manager, field) = &conflicts[0];
            format!("Apply failed with 1 conflict: conflict with \"{manager}\" using {api_version}: {field}")
        } else {
            let mut m = format!("Apply failed with {n} conflicts: ");
            let parts: Vec<String> = by_manager
                .iter()
                .map(|(manager, fields)| {
                    let list: Vec<String> = fields.iter().map(|f| format!("- {f}")).collect();
                    format!(
                        "conflicts with \"{manager}\" using {api_version}:\n{}",
                        list.join("\n")
                    )
                })
                .collect();
            m.push_str(&parts.join("\n"));
            m
        };
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|(manager, field)| {
                json!({
                    "reason": "FieldManagerConflict",
                    "message": format!("conflict with \"{manager}\" using {api_version}"),
                    "field": field,
                })
            })
            .collect();
        ApiError::new(409, "Conflict", message).with_details(json!({"causes": causes}))
    }

    /// 422: the object breaks the schema or a validation rule.
    pub(crate) fn invalid(resource: Resource, name: &str, causes: &[Cause]) -> ApiError {
        let messages: Vec<&str> = causes.iter().map(|c| c.message.as_str()).collect();
        let joined = if messages.len() == 1 {
            messages[0].to_string()
        } else {
            format!("[{}]", messages.join(", "))
        };
        let detail_causes: Vec<Value> = causes
            .iter()
            .map(|c| {
                let detail = c
                    .message
                    .strip_prefix(&format!("{}: ", c.field))
                    .unwrap_or(&c.message);
                json!({"reason": c.reason, "message": detail, "field": c.field})
            })
            .collect();
        ApiError::new(
            422,
            "Invalid",
            format!("{} \"{name}\" is invalid: {joined}", resource.qualified_kind()),
        )
        .with_details(json!({
            "name": name,
            "group": resource.group(),
            "kind": resource.kind(),
            "causes": detail_causes,
        }))
    }

    /// 422 for invalid request options (e.g. an apply without `fieldManager`).
    pub(crate) fn invalid_options(detail: &str) -> ApiError {
        ApiError::new(
            422,
            "Invalid",
            format!("PatchOptions.meta.k8s.io \"\" is invalid: {detail}"),
        )
    }

    pub(crate) fn expired(message: impl Into<String>) -> ApiError {
        ApiError::new(410, "Expired", message)
    }

    pub(crate) fn too_many_requests(retry_after: u32) -> ApiError {
        let mut e = ApiError::new(
            429,
            "TooManyRequests",
            "Too many requests, please try again later.",
        )
        .with_details(json!({"retryAfterSeconds": retry_after}));
        e.retry_after = Some(retry_after);
        e
    }

    pub(crate) fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(
            500,
            "InternalError",
            format!("Internal error occurred: {}", message.into()),
        )
        .with_details(json!({"causes": [{"message": "injected fault"}]}))
    }

    pub(crate) fn unsupported_media_type(content_type: &str) -> ApiError {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format ({content_type}) - accepted media types include: \
                 application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
            ),
        )
    }

    /// The `Status` object.
    pub(crate) fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = json_response(code, &self.to_status());
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// A JSON body with the given status code.
pub(crate) fn json_response(code: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (
        code,
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        bytes,
    )
        .into_response()
}

/// A successful deletion answered with a `Status`.
pub(crate) fn success_status(resource: Resource, name: &str, uid: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {"name": name, "group": resource.group(), "kind": resource.plural(), "uid": uid},
    })
}
