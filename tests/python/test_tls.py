"""The official mlflow client over HTTPS: Arbor serves TLS with a certificate made here
(its own CA), and the client trusts it through MLFLOW_TRACKING_SERVER_CERT_PATH, as a
team with a private CA would configure it."""

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
import ipaddress
from mlflow.tracking import MlflowClient
import pytest

from conftest import Server


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_certs(directory):
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("arbor test CA"))
        .issuer_name(_name("arbor test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = {name: directory / name for name in ("ca.pem", "server.pem", "server.key")}
    paths["ca.pem"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["server.pem"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["server.key"].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def test_mlflow_client_over_https_with_a_private_ca(tmp_path, monkeypatch):
    paths = make_certs(tmp_path)
    server = Server(
        tmp_path / "data", "--tls-cert", str(paths["server.pem"]), "--tls-key", str(paths["server.key"])
    )
    try:
        port = server.address.rsplit(":", 1)[1]
        monkeypatch.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", str(paths["ca.pem"]))
        client = MlflowClient(f"https://localhost:{port}")
        exp = client.create_experiment("over-tls")
        run = client.create_run(exp)
        client.log_metric(run.info.run_id, "loss", 0.25, step=3)
        got = client.get_run(run.info.run_id)
        assert got.data.metrics == {"loss": 0.25}
        # Without the CA the client refuses the server's certificate.
        monkeypatch.delenv("MLFLOW_TRACKING_SERVER_CERT_PATH")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        with pytest.raises(Exception):
            MlflowClient(f"https://localhost:{port}").get_run(run.info.run_id)
    finally:
        assert server.stop() == 0
