//! The one port serves gRPC (tracking, health, reflection v1 and v1alpha) and HTTP/1.1.

use crate::common;
use common::Answer;

use common::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// gRPC, health, reflection (v1 and v1alpha) and HTTP share one port; unknown gRPC methods are UNIMPLEMENTED.
#[tokio::test]
async fn health_reflection_and_http_share_the_port() {
    let server = TestServer::start().await;

    let mut health = HealthClient::new(server.channel().await);
    for service in ["", "arbor.v1.TrackingService"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .answer()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }

    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut reflection = ServerReflectionClient::new(server.channel().await);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = reflection
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .answer();
    let resp = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("unexpected reflection answer {resp:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"arbor.v1.TrackingService".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_string()),
        "{names:?}"
    );

    let ok = http_get(server.addr, "/health").await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(ok.ends_with("OK"), "{ok}");
    let missing = http_get(server.addr, "/no/such/page").await;
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");

    // An unknown gRPC method is UNIMPLEMENTED, not an HTTP 404.
    let mut unknown = tonic::client::Grpc::new(server.channel().await);
    unknown.ready().await.unwrap();
    let err = unknown
        .unary::<_, (), _>(
            tonic::Request::new(()),
            "/arbor.v1.NoSuchService/Nothing".parse().unwrap(),
            tonic_prost::ProstCodec::<(), ()>::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    server.stop().await;
}

/// Sends bytes as they are, to put a message on the wire that does not decode.
struct RawCodec;

struct RawEncoder;

struct RawDecoder;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        let n = bytes::Buf::remaining(src);
        Ok(Some(bytes::Buf::copy_to_bytes(src, n).to_vec()))
    }
}

/// A request message that does not decode is the client's error, INVALID_ARGUMENT, not
/// INTERNAL (which clients and meshes retry as a server fault).
#[tokio::test]
async fn an_undecodable_request_is_invalid_argument() {
    let server = common::TestServer::start().await;
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    grpc.ready().await.expect("ready");
    let path =
        tonic::codegen::http::uri::PathAndQuery::from_static("/arbor.v1.TrackingService/GetRun");
    // Field 1 announced as length-delimited, 127 bytes long, with 1 byte there.
    let err = grpc
        .unary(tonic::Request::new(vec![0x0a, 0x7f, 0x01]), path, RawCodec)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    server.stop().await;
}
