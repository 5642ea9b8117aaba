//! The layer's own error responses, as RFC 9457 problem details (`application/problem+json`).

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use serde::Serialize;

use super::body::{full, ResponseBody};
use crate::error::Error;

/// One kind of refusal: its status, problem type and title.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Problem {
    /// 400: the method requires the key and the request has none.
    MissingKey,
    /// 400: the key header is not a usable key.
    InvalidKey,
    /// 400: the request body could not be read.
    UnreadableBody,
    /// 409: another request with the key is being handled.
    InProgress,
    /// 413: the request body is over the limit.
    TooLarge,
    /// 422: the key was used before for a different request.
    KeyReuse,
    /// 503: the store could not be reached; the request was not run.
    StoreUnavailable,
    /// 500: anything else idem could not do (a corrupt record, a response body that failed).
    Internal,
}

#[derive(Serialize)]
struct Details<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    title: &'a str,
    status: u16,
    detail: &'a str,
    instance: &'a str,
}

impl Problem {
    fn status(self) -> StatusCode {
        match self {
            Problem::MissingKey | Problem::InvalidKey | Problem::UnreadableBody => {
                StatusCode::BAD_REQUEST
            }
            Problem::InProgress => StatusCode::CONFLICT,
            Problem::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Problem::KeyReuse => StatusCode::UNPROCESSABLE_ENTITY,
            Problem::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Problem::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn kind_and_title(self) -> (&'static str, &'static str) {
        match self {
            Problem::MissingKey => (
                "urn:idem:problem:idempotency-key-missing",
                "Idempotency-Key is missing",
            ),
            Problem::InvalidKey => (
                "urn:idem:problem:idempotency-key-invalid",
                "Idempotency-Key is invalid",
            ),
            Problem::UnreadableBody => (
                "urn:idem:problem:request-body-unreadable",
                "The request body could not be read",
            ),
            Problem::InProgress => (
                "urn:idem:problem:idempotency-key-in-progress",
                "A request with this Idempotency-Key is being processed",
            ),
            Problem::TooLarge => (
                "urn:idem:problem:request-body-too-large",
                "The request body is too large",
            ),
            Problem::KeyReuse => (
                "urn:idem:problem:idempotency-key-reused",
                "Idempotency-Key was used for a different request",
            ),
            Problem::StoreUnavailable => (
                "urn:idem:problem:store-unavailable",
                "The idempotency store is unavailable",
            ),
            Problem::Internal => (
                "urn:idem:problem:internal",
                "The request could not be made idempotent",
            ),
        }
    }

    /// The response for this problem, about the request to `path`.
    pub(crate) fn response(self, detail: &str, path: &str) -> Response<ResponseBody> {
        let (kind, title) = self.kind_and_title();
        let status = self.status();
        let details = Details {
            kind,
            title,
            status: status.as_u16(),
            detail,
            instance: path,
        };
        // Serializing plain strings and a number cannot fail; an empty body would still carry
        // the status.
        let body = serde_json::to_vec(&details).unwrap_or_default();
        let mut response = Response::new(full(Bytes::from(body)));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if self == Problem::InProgress {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }

    /// The response for one of idem's errors from the call.
    pub(crate) fn of_error(error: &Error, path: &str) -> Response<ResponseBody> {
        // The details say what the client can do; the error itself (key, backend) goes to the log.
        let (problem, detail) = match error {
            Error::KeyReuse { .. } => (
                Problem::KeyReuse,
                "this Idempotency-Key was used before with another method, path or body; the \
                 request was not run. Use a new key for a new request",
            ),
            Error::InProgress { .. } => (
                Problem::InProgress,
                "a request with this Idempotency-Key is still being processed; retry later",
            ),
            Error::Store { .. } => (
                Problem::StoreUnavailable,
                "the idempotency store could not be reached; the request was not run",
            ),
            _ => (Problem::Internal, "see the server's log"),
        };
        if problem != Problem::KeyReuse && problem != Problem::InProgress {
            tracing::error!(%error, "idem.http: request refused");
        }
        problem.response(detail, path)
    }
}
