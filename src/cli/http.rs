//! The one HTTP/1.1 client of the command-line tools (plain `http://`), with the
//! credentials a client of a server with `--auth` sends: `ARBOR_TOKEN` (or
//! `MLFLOW_TRACKING_TOKEN`) as a bearer token, else `ARBOR_USERNAME`/`ARBOR_PASSWORD`
//! (or MLflow's `MLFLOW_TRACKING_USERNAME`/`PASSWORD`) as HTTP Basic.

use base64::Engine;
use http_body_util::BodyExt;

use crate::server::BoxError;

/// The `Authorization` value the environment names, if any.
pub fn authorization() -> Option<String> {
    let var = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
    };
    if let Some(token) = var(&["ARBOR_TOKEN", "MLFLOW_TRACKING_TOKEN"]) {
        return Some(format!("Bearer {token}"));
    }
    let user = var(&["ARBOR_USERNAME", "MLFLOW_TRACKING_USERNAME"])?;
    let password = var(&["ARBOR_PASSWORD", "MLFLOW_TRACKING_PASSWORD"]).unwrap_or_default();
    Some(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    ))
}

/// Connects to `url`'s host (plain HTTP only).
pub(crate) async fn connect(
    url: &str,
) -> Result<
    (
        hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
        tokio::task::JoinHandle<Result<(), hyper::Error>>,
        String,
    ),
    BoxError,
> {
    let uri: http::Uri = url.parse()?;
    if uri.scheme_str() != Some("http") {
        return Err(format!(
            "{url}: this client speaks plain http:// only (not TLS yet); reach a server with TLS through a loopback listener"
        )
        .into());
    }
    let host = uri.host().ok_or("the server URL has no host")?.to_string();
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    Ok((sender, tokio::spawn(conn), format!("{host}:{port}")))
}

/// A JSON call; the answer's JSON, or an error with the server's message.
pub async fn call(
    url: &str,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value, BoxError> {
    let (mut sender, connection, host) = connect(url).await?;
    let mut request = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, host);
    if let Some(auth) = authorization() {
        request = request.header(http::header::AUTHORIZATION, auth);
    }
    let bytes = match body {
        Some(b) => {
            request = request.header(http::header::CONTENT_TYPE, "application/json");
            serde_json::to_vec(&b)?
        }
        None => Vec::new(),
    };
    let response = sender
        .send_request(request.body(http_body_util::Full::new(bytes::Bytes::from(bytes)))?)
        .await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    drop(sender);
    let _ = connection.await;
    if !status.is_success() {
        return Err(format!(
            "the server answered {status}: {}",
            String::from_utf8_lossy(&body)
        )
        .into());
    }
    if body.is_empty() {
        return Ok(serde_json::Value::Null);
    }
    Ok(serde_json::from_slice(&body)?)
}

/// A gRPC request carrying the environment's credentials (`authorization` metadata).
pub fn grpc_request<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(value) = authorization().and_then(|a| a.parse().ok()) {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

type Sender = hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>;

/// Keep-alive connections to one MLflow-compatible server (plain `http://`), shared by
/// the tasks of an import or export, with its credentials.
pub struct Client {
    pub url: String,
    host: String,
    auth: Option<String>,
    idle: std::sync::Mutex<Vec<Sender>>,
    /// Requests in flight at once (`limit`); none: as many as the callers make.
    in_flight: Option<tokio::sync::Semaphore>,
}

/// An answer that was not 2xx.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub body: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}: {}", self.status, self.body)
    }
}

impl std::error::Error for Refused {}

impl Client {
    /// `auth`: the whole `Authorization` value, if any.
    pub fn new(url: &str, auth: Option<String>) -> Result<Client, BoxError> {
        let uri: http::Uri = url.parse()?;
        if uri.scheme_str() != Some("http") {
            return Err(
                format!("{url}: this client speaks plain http:// only (not TLS yet)").into(),
            );
        }
        let host = uri.host().ok_or("the server URL has no host")?;
        let port = uri.port_u16().unwrap_or(80);
        Ok(Client {
            url: url.trim_end_matches('/').to_string(),
            host: format!("{host}:{port}"),
            auth,
            idle: std::sync::Mutex::new(Vec::new()),
            in_flight: None,
        })
    }

    /// At most `n` requests in flight at once: a server with one worker answers a
    /// queue of concurrent requests no faster than one after another, and slower
    /// when they contend.
    pub fn limit(mut self, n: usize) -> Client {
        self.in_flight = Some(tokio::sync::Semaphore::new(n.max(1)));
        self
    }

    async fn sender(&self) -> Result<Sender, BoxError> {
        loop {
            let reused = self.idle.lock().ok().and_then(|mut v| v.pop());
            match reused {
                Some(mut s) => {
                    if !s.is_closed() && s.ready().await.is_ok() {
                        return Ok(s);
                    }
                }
                None => break,
            }
        }
        let stream = tokio::net::TcpStream::connect(self.host.as_str()).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(sender)
    }

    /// One exchange: (status, body).
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<(u16, bytes::Bytes), BoxError> {
        let _permit = match &self.in_flight {
            Some(s) => Some(s.acquire().await?),
            None => None,
        };
        let mut sender = self.sender().await?;
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, &self.host);
        if let Some(auth) = &self.auth {
            request = request.header(http::header::AUTHORIZATION, auth);
        }
        if let Some(ct) = content_type {
            request = request.header(http::header::CONTENT_TYPE, ct);
        }
        let response = sender
            .send_request(request.body(http_body_util::Full::new(bytes::Bytes::from(body)))?)
            .await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(sender);
        }
        Ok((status, body))
    }

    /// A JSON call; the answer's JSON, or `Refused`.
    pub async fn json(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, BoxError> {
        let (ct, bytes) = match body {
            Some(b) => (Some("application/json"), serde_json::to_vec(b)?),
            None => (None, Vec::new()),
        };
        let (status, out) = self.send(method, path, ct, bytes).await?;
        if !(200..300).contains(&status) {
            return Err(Box::new(Refused {
                status,
                body: String::from_utf8_lossy(&out).chars().take(2000).collect(),
            }));
        }
        if out.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        Ok(serde_json::from_slice(&out)?)
    }
}

/// An `Authorization` value from the first set variable of each list: a token (Bearer),
/// else a user and password (Basic).
pub fn authorization_from(tokens: &[&str], users: &[&str], passwords: &[&str]) -> Option<String> {
    let var = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
    };
    if let Some(token) = var(tokens) {
        return Some(format!("Bearer {token}"));
    }
    let user = var(users)?;
    let password = var(passwords).unwrap_or_default();
    Some(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    ))
}
