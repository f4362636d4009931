//! Strict JSON request bodies: the API refuses what it would otherwise misread.
//!
//! axum's `Json` (serde) accepts a JSON array for a struct (fields by position) and drops
//! unknown fields without a word, so `"privileged2": true` or a typo in a limit would be
//! accepted and ignored. [`Strict`] wants an object, refuses any unknown field at any depth
//! (`serde_ignored`) and names the path of a field of the wrong type
//! (`serde_path_to_error`), as a 400 with exit code 125. The types themselves stay lenient,
//! because they are also read back from records written by other releases.

use axum::extract::{FromRequest, Request};
use bytes::Bytes;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// A JSON body decoded strictly.
#[derive(Debug)]
pub struct Strict<T>(pub T);

impl<S, T> FromRequest<S> for Strict<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            // 413 for a body over the limit, 400 otherwise: the rejection's own status.
            let code = if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                crate::api::ErrorCode::PayloadTooLarge
            } else {
                crate::api::ErrorCode::InvalidRequest
            };
            let mut err = ApiError::new(code, format!("reading the request: {}", e.body_text()))
                .with_exit_code(125);
            err.status = e.status();
            err
        })?;
        decode(&bytes).map(Strict)
    }
}

/// Decodes `bytes` as `T` with the checks above.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let bad =
        |m: String| ApiError::bad_request(format!("invalid request: {m}")).with_exit_code(125);
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        Some(_) => return Err(bad("the body must be a JSON object".into())),
        None => return Err(bad("the body is empty".into())),
    }
    let mut unknown = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(bytes);
    // `?` marks an Option in serde_ignored's paths; users know the field names only.
    let mut note = |path: serde_ignored::Path<'_>| unknown.push(path.to_string().replace(".?", ""));
    let ignoring = serde_ignored::Deserializer::new(&mut de, &mut note);
    let value: T = serde_path_to_error::deserialize(ignoring).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            bad(inner.to_string())
        } else {
            bad(format!("{path}: {inner}"))
        }
    })?;
    de.end().map_err(|e| bad(e.to_string()))?;
    if let Some(field) = unknown.first() {
        return Err(bad(format!("unknown field {field}")));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Inner {
        #[allow(dead_code)]
        n: u32,
    }

    #[derive(Debug, serde::Deserialize)]
    struct Outer {
        #[allow(dead_code)]
        name: String,
        #[serde(default)]
        #[allow(dead_code)]
        inner: Option<Inner>,
    }

    fn message(body: &str) -> String {
        match decode::<Outer>(body.as_bytes()) {
            Ok(v) => format!("accepted {v:?}"),
            Err(e) => e.message,
        }
    }

    #[test]
    fn refuses_unknown_fields_arrays_and_wrong_types_by_path() {
        assert!(decode::<Outer>(br#"{"name": "a", "inner": {"n": 1}}"#).is_ok());
        assert!(
            message(r#"{"name": "a", "privileged2": true}"#).contains("unknown field privileged2")
        );
        let m = message(r#"{"name": "a", "inner": {"n": 1, "m": 2}}"#);
        assert!(m.contains("unknown field inner.m"), "{m}");
        assert!(message(r#"["a"]"#).contains("must be a JSON object"));
        assert!(message(r#"{"name": "a", "inner": {"n": -1}}"#).contains("inner.n"));
        assert!(message(r#"{"name": "a"} {}"#).contains("trailing"));
    }
}
