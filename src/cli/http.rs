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
