//! TLS on the one port, with certificates made at test time: HTTPS and gRPC over TLS;
//! mTLS refusing clients without a certificate from the client CA; SIGHUP swapping the
//! certificate for new connections while an open connection keeps working.

use crate::common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(p, KeyPair::generate().expect("key")).expect("CA")
}

/// A certificate for `names` signed by `ca`: (certificate PEM, key PEM).
fn leaf(ca: &CertifiedIssuer<'static, KeyPair>, names: &[&str], client: bool) -> (String, String) {
    let key = KeyPair::generate().expect("key");
    let mut p = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .expect("params");
    p.extended_key_usages = vec![if client {
        ExtendedKeyUsagePurpose::ClientAuth
    } else {
        ExtendedKeyUsagePurpose::ServerAuth
    }];
    let cert = p.signed_by(&key, ca).expect("sign");
    (cert.pem(), key.serialize_pem())
}

/// Writes a server certificate from `ca` to dir/server.pem and dir/server.key.
fn write_server_cert(dir: &Path, ca: &CertifiedIssuer<'static, KeyPair>) {
    let (cert, key) = leaf(ca, &["localhost", "127.0.0.1"], false);
    // Written beside and renamed, as a certificate manager does.
    std::fs::write(dir.join("server.pem.new"), cert).expect("write");
    std::fs::write(dir.join("server.key.new"), key).expect("write");
    std::fs::rename(dir.join("server.pem.new"), dir.join("server.pem")).expect("rename");
    std::fs::rename(dir.join("server.key.new"), dir.join("server.key")).expect("rename");
}

fn serve(dir: &Path, extra: &[&str]) -> (std::process::Child, SocketAddr) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_arbor"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join("data"))
        .arg("--tls-cert")
        .arg(dir.join("server.pem"))
        .arg("--tls-key")
        .arg(dir.join("server.key"))
        .args(extra);
    common::start_process(cmd)
}

async fn grpc(
    addr: SocketAddr,
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> Result<
    arbor::pb::tracking_service_client::TrackingServiceClient<tonic::transport::Channel>,
    String,
> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let channel = Endpoint::from_shared(format!("https://{addr}"))
        .map_err(|e| e.to_string())?
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(arbor::pb::tracking_service_client::TrackingServiceClient::new(channel))
}

async fn get_default(
    c: &mut arbor::pb::tracking_service_client::TrackingServiceClient<tonic::transport::Channel>,
) -> Result<(), tonic::Status> {
    c.get_experiment(arbor::pb::GetExperimentRequest {
        experiment_id: "0".into(),
    })
    .await
    .map(|_| ())
}

/// `GET /health` over HTTPS, trusting `ca_pem`; the response's status line.
async fn https_health(addr: SocketAddr, ca_pem: &str) -> Result<String, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls_pki_types::ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    tls.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    let _ = tls.read_to_string(&mut out).await;
    Ok(out.lines().next().unwrap_or_default().to_string())
}

/// HTTPS and gRPC over TLS share the port; plain HTTP on it gets no answer.
#[tokio::test]
async fn https_and_grpc_over_tls_share_the_port() {
    let dir = tempfile::tempdir().expect("tempdir");
    let authority = ca("test CA");
    write_server_cert(dir.path(), &authority);
    let (mut child, addr) = serve(dir.path(), &[]);
    let ca_pem = authority.pem();

    assert_eq!(
        https_health(addr, &ca_pem).await.expect("https"),
        "HTTP/1.1 200 OK"
    );
    let mut c = grpc(addr, &ca_pem, None).await.expect("gRPC over TLS");
    get_default(&mut c).await.expect("a call over TLS");
    let other = ca("another CA").pem();
    assert!(
        https_health(addr, &other).await.is_err(),
        "an untrusted server certificate"
    );
    let mut plain = tokio::net::TcpStream::connect(addr).await.expect("connect");
    plain
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("send");
    let mut out = Vec::new();
    let _ = plain.read_to_end(&mut out).await;
    assert!(!String::from_utf8_lossy(&out).contains("200 OK"));
    drop(c);
    assert!(common::terminate(&mut child));
}

/// With a client CA, only clients with a certificate from it get through.
#[tokio::test]
async fn mtls_refuses_clients_without_a_certificate_from_the_client_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let authority = ca("server CA");
    write_server_cert(dir.path(), &authority);
    let clients = ca("client CA");
    std::fs::write(dir.path().join("clients.pem"), clients.pem()).expect("write");
    let ca_arg = dir.path().join("clients.pem");
    let (mut child, addr) = serve(
        dir.path(),
        &["--tls-client-ca", ca_arg.to_str().expect("utf-8")],
    );
    let ca_pem = authority.pem();
    let (cert, key) = leaf(&clients, &["trainer.mesh.local"], true);
    let mut ok = grpc(addr, &ca_pem, Some((&cert, &key)))
        .await
        .expect("with a client certificate");
    get_default(&mut ok).await.expect("an mTLS call");

    let stranger = ca("a stranger's CA");
    let (cert, key) = leaf(&stranger, &["intruder"], true);
    let refused = match grpc(addr, &ca_pem, Some((&cert, &key))).await {
        Err(_) => true,
        Ok(mut c) => get_default(&mut c).await.is_err(),
    };
    assert!(refused, "a certificate from another CA was accepted");
    let refused = match grpc(addr, &ca_pem, None).await {
        Err(_) => true,
        Ok(mut c) => get_default(&mut c).await.is_err(),
    };
    assert!(refused, "a client without a certificate was accepted");
    assert!(
        https_health(addr, &ca_pem)
            .await
            .map_or(true, |line| !line.contains("200"))
    );
    drop(ok);
    assert!(common::terminate(&mut child));
}

/// SIGHUP reads the certificate again: new connections get the new one, an open
/// connection goes on with the old.
#[tokio::test]
async fn sighup_swaps_the_certificate_for_new_connections_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = ca("first CA");
    write_server_cert(dir.path(), &first);
    let (mut child, addr) = serve(dir.path(), &[]);
    let mut open = grpc(addr, &first.pem(), None).await.expect("connect");
    get_default(&mut open).await.expect("call");

    let second = ca("second CA");
    write_server_cert(dir.path(), &second);
    let pid = i32::try_from(child.id())
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).expect("SIGHUP");
    // The reload happens on the server's own time: poll for it, bounded.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while https_health(addr, &second.pem()).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate never came"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        https_health(addr, &first.pem()).await.is_err(),
        "new connections still get the old certificate"
    );
    get_default(&mut open)
        .await
        .expect("the open connection goes on");
    drop(open);
    assert!(common::terminate(&mut child));
}

/// The command-line clients speak HTTPS: `arbor backup --server https://...` and
/// `arbor admin --server https://...` trust a private CA through `ARBOR_CA_CERT`, and
/// refuse a server whose certificate nothing they trust signed.
#[tokio::test]
async fn cli_clients_reach_a_tls_server_trusting_a_private_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let authority = ca("cli test CA");
    write_server_cert(dir.path(), &authority);
    std::fs::write(dir.path().join("ca.pem"), authority.pem()).expect("write");
    std::fs::write(dir.path().join("other.pem"), ca("another CA").pem()).expect("write");
    let (mut child, addr) = serve(dir.path(), &["--auth", "--admin-password", "admin-pass-1"]);
    let url = format!("https://localhost:{}", addr.port());
    let run = |ca: &str, args: Vec<String>| {
        let ca = dir.path().join(ca);
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            common::arbor_cli_with(
                &args,
                &[
                    ("ARBOR_CA_CERT", ca.as_os_str()),
                    ("ARBOR_USERNAME", "admin".as_ref()),
                    ("ARBOR_PASSWORD", "admin-pass-1".as_ref()),
                ],
                &["ARBOR_TOKEN"],
            )
            .await
        }
    };
    let backup = dir.path().join("backup.bin");
    let args = vec![
        "backup".to_string(),
        "--server".into(),
        url.clone(),
        "--out".into(),
        backup.display().to_string(),
    ];
    let (ok, text) = run("ca.pem", args.clone()).await;
    assert!(ok, "{text}");
    assert!(backup.exists());
    let (ok, text) = run(
        "ca.pem",
        vec![
            "admin".into(),
            "--server".into(),
            url.clone(),
            "list-users".into(),
        ],
    )
    .await;
    assert!(ok && text.contains("admin\tadmin"), "{text}");
    std::fs::remove_file(&backup).expect("remove");
    let (ok, text) = run("other.pem", args).await;
    assert!(!ok && !backup.exists(), "{text}");
    assert!(common::terminate(&mut child));
}
