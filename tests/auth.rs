//! `--auth` on the gRPC services, with the generated client: credentials in
//! `authorization` metadata (Basic or Bearer), UNAUTHENTICATED without them,
//! PERMISSION_DENIED without the permission, searches and streams that leave out what
//! the caller may not read (also when a grant is revoked while the stream is open), and
//! users, tokens and grants rebuilt from the log like everything else.

mod common;

use arbor::domain::access::Permission;
use arbor::pb;
use arbor::pb::hierarchy_service_client::HierarchyServiceClient;
use arbor::pb::tracking_service_client::TrackingServiceClient;
use arbor::pb::watch_service_client::WatchServiceClient;
use base64::Engine;
use common::{ADMIN_PASSWORD, TestServer};
use tonic::Code;

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// A request carrying `auth` as its `authorization` metadata.
fn with<T>(auth: &str, message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut()
        .insert("authorization", auth.parse().expect("metadata"));
    r
}

/// A JSON call to the REST API as `auth`: (status, body).
async fn rest_as(
    server: &TestServer,
    auth: &str,
    path: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    use http_body_util::{BodyExt, Full};
    let stream = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    let connection = tokio::spawn(conn);
    let req = hyper::Request::post(path)
        .header("host", server.addr.to_string())
        .header("content-type", "application/json")
        .header("authorization", auth)
        .body(Full::new(hyper::body::Bytes::from(body.to_string())))
        .expect("request");
    let res = sender.send_request(req).await.expect("send");
    let status = res.status().as_u16();
    let out = res.into_body().collect().await.expect("body").to_bytes();
    drop(sender);
    let _ = connection.await;
    let json = serde_json::from_slice(&out).unwrap_or(serde_json::Value::Null);
    (status, json)
}

async fn create_user(server: &TestServer, name: &str, password: &str) {
    let (status, body) = rest_as(
        server,
        &basic("admin", ADMIN_PASSWORD),
        "/api/2.0/mlflow/users/create",
        serde_json::json!({"username": name, "password": password}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// `owner` grants `user` a permission on an experiment.
async fn grant(server: &TestServer, owner: &str, exp: &str, user: &str, level: &str) {
    let (status, body) = rest_as(
        server,
        owner,
        "/api/3.0/mlflow/users/permissions/grant",
        serde_json::json!({"username": user, "resource_type": "experiment", "resource_id": exp, "permission": level}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

async fn revoke(server: &TestServer, owner: &str, exp: &str, user: &str) {
    let (status, body) = rest_as(
        server,
        owner,
        "/api/3.0/mlflow/users/permissions/revoke",
        serde_json::json!({"username": user, "resource_type": "experiment", "resource_id": exp}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// An experiment and a run in it, made by `auth`.
async fn experiment_and_run(
    c: &mut TrackingServiceClient<tonic::transport::Channel>,
    auth: &str,
    name: &str,
) -> (String, String) {
    let exp = c
        .create_experiment(with(
            auth,
            pb::CreateExperimentRequest {
                name: name.into(),
                ..Default::default()
            },
        ))
        .await
        .expect("create experiment")
        .into_inner()
        .experiment_id;
    let run = c
        .create_run(with(
            auth,
            pb::CreateRunRequest {
                experiment_id: exp.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("create run")
        .into_inner()
        .run
        .and_then(|r| r.info)
        .expect("run info")
        .run_id;
    (exp, run)
}

/// Every Arbor gRPC service refuses a call without credentials or with wrong ones;
/// Basic and Bearer credentials both work.
#[tokio::test]
async fn grpc_refuses_anonymous_and_wrong_credentials() {
    let server = TestServer::start_with_auth(Permission::Read).await;
    let channel = server.channel().await;
    let mut tracking = TrackingServiceClient::new(channel.clone());
    let err = tracking
        .search_experiments(pb::SearchExperimentsRequest::default())
        .await
        .expect_err("anonymous");
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = tracking
        .search_experiments(with(
            &basic("admin", "wrong"),
            pb::SearchExperimentsRequest::default(),
        ))
        .await
        .expect_err("wrong password");
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = HierarchyServiceClient::new(channel.clone())
        .get_ancestors(pb::GetAncestorsRequest { run_id: "x".into() })
        .await
        .expect_err("anonymous");
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = WatchServiceClient::new(channel.clone())
        .watch_events(pb::WatchEventsRequest::default())
        .await
        .expect_err("anonymous");
    assert_eq!(err.code(), Code::Unauthenticated);

    let admin = basic("admin", ADMIN_PASSWORD);
    let (status, token) = rest_as(
        &server,
        &admin,
        "/api/arbor/v1/tokens/create",
        serde_json::json!({"description": "grpc"}),
    )
    .await;
    assert_eq!(status, 200);
    let bearer = format!("Bearer {}", token["token"].as_str().expect("token"));
    for auth in [admin.as_str(), bearer.as_str()] {
        let found = tracking
            .search_experiments(with(auth, pb::SearchExperimentsRequest::default()))
            .await
            .expect("authenticated")
            .into_inner();
        assert_eq!(found.experiments.len(), 1);
    }
    server.stop().await;
}

/// Without a grant (default NO_PERMISSIONS) a user can neither read nor write another
/// user's experiment through any service; READ opens reads, EDIT writes.
#[tokio::test]
async fn grpc_enforces_experiment_permissions() {
    let server = TestServer::start_with_auth(Permission::NoPermissions).await;
    create_user(&server, "alice", "alice-pass-1").await;
    create_user(&server, "bob", "bob-pass-1").await;
    let (alice, bob) = (basic("alice", "alice-pass-1"), basic("bob", "bob-pass-1"));
    let channel = server.channel().await;
    let mut c = TrackingServiceClient::new(channel.clone());
    let mut h = HierarchyServiceClient::new(channel.clone());
    let (exp, run) = experiment_and_run(&mut c, &alice, "alice-exp").await;

    fn denied<T: std::fmt::Debug>(r: Result<T, tonic::Status>) -> Code {
        r.expect_err("denied").code()
    }
    let get = || pb::GetRunRequest {
        run_id: run.clone(),
    };
    let log = || pb::LogMetricRequest {
        run_id: run.clone(),
        key: "loss".into(),
        value: 1.0,
        timestamp: 1,
        step: 1,
    };
    assert_eq!(
        denied(c.get_run(with(&bob, get())).await),
        Code::PermissionDenied
    );
    assert_eq!(
        denied(
            c.search_runs(with(
                &bob,
                pb::SearchRunsRequest {
                    experiment_ids: vec![exp.clone()],
                    ..Default::default()
                }
            ))
            .await
        ),
        Code::PermissionDenied
    );
    assert_eq!(
        denied(
            h.get_run_tree(with(
                &bob,
                pb::GetRunTreeRequest {
                    run_id: run.clone(),
                    ..Default::default()
                }
            ))
            .await
        ),
        Code::PermissionDenied
    );
    assert_eq!(
        denied(
            h.get_or_create_child_run(with(
                &bob,
                pb::GetOrCreateChildRunRequest {
                    parent_run_id: run.clone(),
                    run_name: "sneaky".into(),
                    ..Default::default()
                }
            ))
            .await
        ),
        Code::PermissionDenied
    );
    let stream = tokio_stream::iter(vec![pb::LogMetricStreamRequest {
        run_id: run.clone(),
        metrics: vec![pb::Metric {
            key: "loss".into(),
            value: 2.0,
            timestamp: 2,
            step: 2,
        }],
    }]);
    assert_eq!(
        denied(c.log_metric_stream(with(&bob, stream)).await),
        Code::PermissionDenied
    );
    let visible = c
        .search_experiments(with(&bob, pb::SearchExperimentsRequest::default()))
        .await
        .expect("search")
        .into_inner();
    assert!(visible.experiments.is_empty(), "{visible:?}");

    grant(&server, &alice, &exp, "bob", "READ").await;
    assert!(c.get_run(with(&bob, get())).await.is_ok());
    assert_eq!(
        denied(c.log_metric(with(&bob, log())).await),
        Code::PermissionDenied
    );
    revoke(&server, &alice, &exp, "bob").await;
    grant(&server, &alice, &exp, "bob", "EDIT").await;
    c.log_metric(with(&bob, log())).await.expect("EDIT may log");
    assert_eq!(
        denied(
            c.delete_run(with(
                &bob,
                pb::DeleteRunRequest {
                    run_id: run.clone(),
                    cascade: false
                }
            ))
            .await
        ),
        Code::PermissionDenied
    );
    // The log records who logged the point.
    server.stop_and_check_rebuild().await;
}

/// A watcher whose grant is revoked while the stream is open stops receiving that
/// experiment's events from the revocation on, and goes on receiving its own.
#[tokio::test]
async fn a_revoked_grant_takes_effect_on_an_open_stream() {
    let server = TestServer::start_with_auth(Permission::NoPermissions).await;
    create_user(&server, "alice", "alice-pass-1").await;
    create_user(&server, "bob", "bob-pass-1").await;
    let (alice, bob) = (basic("alice", "alice-pass-1"), basic("bob", "bob-pass-1"));
    let channel = server.channel().await;
    let mut c = TrackingServiceClient::new(channel.clone());
    let (a_exp, a_run) = experiment_and_run(&mut c, &alice, "a").await;
    let (_, b_run) = experiment_and_run(&mut c, &bob, "b").await;
    grant(&server, &alice, &a_exp, "bob", "READ").await;

    let tag = |run: &str, value: &str| pb::SetTagRequest {
        run_id: run.into(),
        key: "step".into(),
        value: value.into(),
    };
    // The feed replays from the start of the log, so nothing depends on when the
    // session starts; bob's own "start" tag marks where this test begins to look.
    c.set_tag(with(&bob, tag(&b_run, "start")))
        .await
        .expect("tag");
    let mut feed = WatchServiceClient::new(channel.clone())
        .watch_events(with(
            &bob,
            pb::WatchEventsRequest {
                from_seq: Some(1),
                ..Default::default()
            },
        ))
        .await
        .expect("watch")
        .into_inner();
    // The tags set on runs, in order, until `until` (run, value) arrives.
    async fn tags_until(
        feed: &mut tonic::Streaming<pb::Event>,
        until: (&str, &str),
    ) -> Vec<(String, String, String)> {
        let mut seen = Vec::new();
        while let Some(ev) = feed.message().await.expect("event") {
            if let Some(pb::event::Payload::TagSet(t)) = &ev.payload {
                let item = (t.run_id.clone(), t.tags[0].value.clone(), ev.actor.clone());
                let done = item.0 == until.0 && item.1 == until.1;
                seen.push(item);
                if done {
                    return seen;
                }
            }
        }
        panic!("the feed ended before {until:?}");
    }
    tags_until(&mut feed, (&b_run, "start")).await;
    c.set_tag(with(&alice, tag(&a_run, "seen")))
        .await
        .expect("tag");
    // Delivered while bob may read it.
    assert_eq!(
        tags_until(&mut feed, (&a_run, "seen")).await,
        vec![(a_run.clone(), "seen".to_string(), "alice".to_string())]
    );
    revoke(&server, &alice, &a_exp, "bob").await;
    c.set_tag(with(&alice, tag(&a_run, "hidden")))
        .await
        .expect("tag");
    c.set_tag(with(&bob, tag(&b_run, "mine")))
        .await
        .expect("tag");
    // Not delivered once the grant is gone; bob's own event still is.
    assert_eq!(
        tags_until(&mut feed, (&b_run, "mine")).await,
        vec![(b_run.clone(), "mine".to_string(), "bob".to_string())]
    );
    drop(feed);
    server.stop_and_check_rebuild().await;
}
