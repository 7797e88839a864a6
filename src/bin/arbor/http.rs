//! The one HTTP/1.1 client of the command-line tools (plain `http://`), with the
//! credentials a client of a server with `--auth` sends: `ARBOR_TOKEN` (or
//! `MLFLOW_TRACKING_TOKEN`) as a bearer token, else `ARBOR_USERNAME`/`ARBOR_PASSWORD`
//! (or MLflow's `MLFLOW_TRACKING_USERNAME`/`PASSWORD`) as HTTP Basic.

use base64::Engine;
use http_body_util::BodyExt;

use arbor::server::BoxError;

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

/// A JSON call to `url` with the environment's Arbor credentials (`authorization`);
/// the answer's JSON, or an error with the server's message.
pub async fn call(
    url: &str,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value, BoxError> {
    Client::new(url, authorization())?
        .json(method, path, body.as_ref())
        .await
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

/// Keep-alive connections to one server (`http://`, or `https://` trusting the system's
/// CAs and, when set, the PEM file in `ARBOR_CA_CERT` or MLflow's
/// `MLFLOW_TRACKING_SERVER_CERT_PATH`), shared by the tasks of an import or export,
/// with its credentials.
pub struct Client {
    host: String,
    /// The TLS connector and the name the certificate must carry, for `https://`.
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls_pki_types::ServerName<'static>,
    )>,
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
        let host = uri.host().ok_or("the server URL has no host")?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let (tls, default_port) = match uri.scheme_str() {
            Some("http") => (None, 80),
            Some("https") => {
                let name = rustls_pki_types::ServerName::try_from(host.to_string())
                    .map_err(|e| format!("{url}: {e}"))?;
                (Some((tls_connector()?, name)), 443)
            }
            _ => return Err(format!("{url}: give an http:// or https:// URL").into()),
        };
        let port = uri.port_u16().unwrap_or(default_port);
        Ok(Client {
            host: if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            },
            tls,
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
        let sender = match &self.tls {
            None => handshake(stream).await?,
            Some((connector, name)) => {
                handshake(connector.connect(name.clone(), stream).await?).await?
            }
        };
        Ok(sender)
    }

    /// A GET whose body is written to `to` as it arrives.
    pub async fn get_to_file(&self, path: &str, to: &std::path::Path) -> Result<(), BoxError> {
        use tokio::io::AsyncWriteExt;
        let mut sender = self.sender().await?;
        let mut request = http::Request::get(path).header(http::header::HOST, &self.host);
        if let Some(auth) = &self.auth {
            request = request.header(http::header::AUTHORIZATION, auth);
        }
        let response = sender
            .send_request(request.body(http_body_util::Full::new(bytes::Bytes::new()))?)
            .await?;
        if !response.status().is_success() {
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            return Err(format!(
                "the server answered {status}: {}",
                String::from_utf8_lossy(&body)
            )
            .into());
        }
        let mut file = tokio::fs::File::create(to).await?;
        let mut body = response.into_body();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                file.write_all(&data).await?;
            }
        }
        file.flush().await?;
        Ok(())
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

/// An HTTP/1.1 connection over `io` (plain or TLS), driven by its own task.
async fn handshake<T>(io: T) -> Result<Sender, BoxError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// TLS for `https://`: the system's CAs, and the PEM file named by `ARBOR_CA_CERT` or
/// `MLFLOW_TRACKING_SERVER_CERT_PATH` (a private CA) when set.
fn tls_connector() -> Result<tokio_rustls::TlsConnector, BoxError> {
    use rustls_pki_types::pem::PemObject;
    use std::sync::Arc;
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    for var in ["ARBOR_CA_CERT", "MLFLOW_TRACKING_SERVER_CERT_PATH"] {
        if let Some(path) = std::env::var_os(var).filter(|p| !p.is_empty()) {
            let certs = rustls_pki_types::CertificateDer::pem_file_iter(&path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("{var}: cannot read {}: {e}", path.to_string_lossy()))?;
            for cert in certs {
                roots.add(cert).map_err(|e| format!("{var}: {e}"))?;
            }
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// Credentials for an MLflow server, from the variables its client reads.
pub fn mlflow_credentials() -> Option<String> {
    crate::http::authorization_from(
        &["MLFLOW_TRACKING_TOKEN"],
        &["MLFLOW_TRACKING_USERNAME"],
        &["MLFLOW_TRACKING_PASSWORD"],
    )
}

/// Credentials for Arbor: `ARBOR_TOKEN`, or `ARBOR_USERNAME` and `ARBOR_PASSWORD`.
pub fn arbor_credentials() -> Option<String> {
    crate::http::authorization_from(&["ARBOR_TOKEN"], &["ARBOR_USERNAME"], &["ARBOR_PASSWORD"])
}
