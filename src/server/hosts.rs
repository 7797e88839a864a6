//! The Host allowlist, against DNS rebinding: a web page on another site can make a
//! browser send requests to `127.0.0.1:5000` under a name it controls, and read the
//! answers; refusing requests whose `Host` (HTTP/1.1) or `:authority` (HTTP/2, gRPC) is
//! not one of the server's own names closes that door. The default allows only
//! loopback names when the server listens on loopback, and any name otherwise (a server
//! on a network address is reached by names Arbor cannot know: set `--allowed-hosts`).

use std::sync::Arc;

/// Which host names requests may carry.
#[derive(Debug, Clone, Default)]
pub struct AllowedHosts {
    /// `None`: any. Entries are lower-case names without ports; `*.example.com` also
    /// allows every subdomain.
    names: Option<Arc<Vec<String>>>,
}

impl AllowedHosts {
    /// Any host.
    pub fn any() -> Self {
        Self { names: None }
    }

    /// From `--allowed-hosts` (`*` alone allows any), or the default for an address.
    pub fn new(flag: &[String], listen: std::net::SocketAddr) -> Self {
        if flag.iter().any(|h| h.trim() == "*") {
            return Self::any();
        }
        if flag.is_empty() {
            if !listen.ip().is_loopback() {
                return Self::any();
            }
            return Self::only(&["localhost", "127.0.0.1", "::1"]);
        }
        Self::only(&flag.iter().map(String::as_str).collect::<Vec<_>>())
    }

    fn only(names: &[&str]) -> Self {
        Self {
            names: Some(Arc::new(
                names
                    .iter()
                    .map(|n| strip_port(n.trim()).to_ascii_lowercase())
                    .collect(),
            )),
        }
    }

    /// Whether a `Host` / `:authority` value is allowed; a request without one is.
    pub fn allows(&self, host: Option<&str>) -> bool {
        let (Some(names), Some(host)) = (&self.names, host) else {
            return true;
        };
        let host = strip_port(host).to_ascii_lowercase();
        names.iter().any(|n| match n.strip_prefix("*.") {
            Some(domain) => host.ends_with(&format!(".{domain}")) || host == domain,
            None => *n == host,
        })
    }
}

/// `name:port`, `[v6]:port` and `[v6]` to the bare name or address.
fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.chars().all(|c| c.is_ascii_digit()) => {
            name
        }
        _ => host,
    }
}

impl super::around::Around for AllowedHosts {
    type Carry = ();

    fn before<B>(&self, req: &http::Request<B>) -> Result<(), Box<super::around::Response>> {
        let host = req
            .headers()
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()));
        if self.allows(host) {
            return Ok(());
        }
        Err(Box::new(refusal(req, host)))
    }

    fn after((): (), response: super::around::Response) -> super::around::Response {
        response
    }
}

/// 403 (MLflow's error shape) or PERMISSION_DENIED for a request naming another host.
fn refusal<B>(req: &http::Request<B>, host: Option<&str>) -> super::around::Response {
    let shown: String = host.unwrap_or_default().chars().take(100).collect();
    let message = format!(
        "the host '{shown}' is not one this server answers to (--allowed-hosts; this protects against DNS rebinding)"
    );
    tracing::warn!("{message}");
    let grpc = super::is_grpc(req.headers());
    if grpc {
        tonic::Status::permission_denied(message).into_http::<tonic::body::Body>()
    } else {
        let body = serde_json::json!({"error_code": "PERMISSION_DENIED", "message": message});
        let mut r = http::Response::new(tonic::body::Body::new(http_body_util::Full::new(
            bytes::Bytes::from(body.to_string()),
        )));
        *r.status_mut() = http::StatusCode::FORBIDDEN;
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        r
    }
}

#[cfg(test)]
mod tests {
    use super::AllowedHosts;

    #[test]
    fn loopback_default_and_lists() {
        let lo: std::net::SocketAddr = "127.0.0.1:5000".parse().expect("addr");
        let any: std::net::SocketAddr = "0.0.0.0:5000".parse().expect("addr");
        let d = AllowedHosts::new(&[], lo);
        for ok in [
            "localhost",
            "LOCALHOST:5000",
            "127.0.0.1:5000",
            "[::1]:5000",
            "[::1]",
        ] {
            assert!(d.allows(Some(ok)), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:5000",
            "127.0.0.1.nip.io:5000",
            "localhost.evil",
        ] {
            assert!(!d.allows(Some(bad)), "{bad}");
        }
        assert!(d.allows(None));
        assert!(AllowedHosts::new(&[], any).allows(Some("whatever.example")));
        let list = AllowedHosts::new(&["*.corp.example".into(), "tracking:5000".into()], any);
        assert!(list.allows(Some("a.corp.example")) && list.allows(Some("tracking:80")));
        assert!(!list.allows(Some("corp.example.evil")));
        assert!(AllowedHosts::new(&["*".into()], lo).allows(Some("x")));
    }
}
