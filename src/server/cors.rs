//! CORS, off unless `--cors-allowed-origins` opens it: without it no cross-origin header
//! is ever sent, so a page on another origin cannot read Arbor's answers. With it, the
//! listed origins (or `*`) get preflight answers and `Access-Control-Allow-Origin` on
//! every response; other origins get nothing.

use std::sync::Arc;

use http::header::{self, HeaderValue};

/// How long a browser may cache a preflight answer.
const PREFLIGHT_MAX_AGE_SECS: &str = "600";

#[derive(Debug, Clone, Default)]
pub struct Cors {
    /// `None`: CORS off. Otherwise the allowed origins (`*` alone: any).
    origins: Option<Arc<Vec<String>>>,
}

impl Cors {
    pub fn new(origins: &[String]) -> Self {
        let origins: Vec<String> = origins
            .iter()
            .map(|o| o.trim().trim_end_matches('/').to_string())
            .filter(|o| !o.is_empty())
            .collect();
        Self {
            origins: (!origins.is_empty()).then(|| Arc::new(origins)),
        }
    }

    /// The `Access-Control-Allow-Origin` value for a request's `Origin`, if allowed.
    fn allow(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        let list = self.origins.as_ref()?;
        let origin = origin?;
        let text = origin.to_str().ok()?;
        if list.iter().any(|o| o == "*") {
            return Some(HeaderValue::from_static("*"));
        }
        list.iter().any(|o| o == text).then(|| origin.clone())
    }
}

impl super::around::Around for Cors {
    /// The `Access-Control-Allow-Origin` to add, for an allowed origin.
    type Carry = Option<HeaderValue>;

    fn before<B>(
        &self,
        req: &http::Request<B>,
    ) -> Result<Self::Carry, Box<super::around::Response>> {
        let Some(allow) = self.allow(req.headers().get(header::ORIGIN)) else {
            return Ok(None);
        };
        let preflight = req.method() == http::Method::OPTIONS
            && req
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        if !preflight {
            return Ok(Some(allow));
        }
        let mut r = http::Response::new(tonic::body::Body::empty());
        *r.status_mut() = http::StatusCode::NO_CONTENT;
        let h = r.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, PUT, PATCH, DELETE, OPTIONS"),
        );
        if let Some(asked) = req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
        }
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static(PREFLIGHT_MAX_AGE_SECS),
        );
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
        Err(Box::new(r))
    }

    fn after(allow: Self::Carry, mut response: super::around::Response) -> super::around::Response {
        if let Some(allow) = allow {
            let h = response.headers_mut();
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
            h.append(header::VARY, HeaderValue::from_static("Origin"));
        }
        response
    }
}
