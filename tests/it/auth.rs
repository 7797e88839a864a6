//! `--auth` on the gRPC services, with the generated client: credentials in
//! `authorization` metadata (Basic or Bearer), UNAUTHENTICATED without them,
//! PERMISSION_DENIED without the permission, searches and streams that leave out what
//! the caller may not read (also when a grant is revoked while the stream is open), and
//! users, tokens and grants rebuilt from the log like everything else.

use crate::common;
use common::Answer;

use arbor::domain::access::Permission;
use arbor::pb;
use arbor::pb::hierarchy_service_client::HierarchyServiceClient;
use arbor::pb::tracking_service_client::TrackingServiceClient;
use arbor::pb::watch_service_client::WatchServiceClient;
use base64::Engine;
use common::{ADMIN_PASSWORD, TestServer};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
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
    let (status, out) = call_as(
        server,
        auth,
        "POST",
        path,
        Some("application/json"),
        body.to_string().into_bytes(),
    )
    .await;
    let json = serde_json::from_slice(&out).unwrap_or(serde_json::Value::Null);
    (status, json)
}

/// One HTTP request to the server as `auth`: (status, body bytes).
async fn call_as(
    server: &TestServer,
    auth: &str,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (u16, Vec<u8>) {
    use http_body_util::{BodyExt, Full};
    let stream = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    let connection = tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", server.addr.to_string())
        .header("authorization", auth);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let req = req
        .body(Full::new(hyper::body::Bytes::from(body)))
        .expect("request");
    let res = sender.send_request(req).await.expect("send");
    let status = res.status().as_u16();
    let out = res.into_body().collect().await.expect("body").to_bytes();
    drop(sender);
    let _ = connection.await;
    (status, out.to_vec())
}

/// A GET of the REST API as `auth`, its answer as JSON.
async fn get_as(server: &TestServer, auth: &str, path: &str) -> (u16, serde_json::Value) {
    let (status, out) = call_as(server, auth, "GET", path, None, vec![]).await;
    (
        status,
        serde_json::from_slice(&out).unwrap_or(serde_json::Value::Null),
    )
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

/// `owner` changes `user`'s permission on an experiment.
async fn regrant(server: &TestServer, owner: &str, exp: &str, user: &str, level: &str) {
    let (status, body) = call_as(
        server,
        owner,
        "PATCH",
        "/api/2.0/mlflow/experiments/permissions/update",
        Some("application/json"),
        serde_json::json!({"experiment_id": exp, "username": user, "permission": level})
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
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
        .answer()
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
        .answer()
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
            .answer();
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
        .answer();
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
        .answer();
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

/// A `mlflow.parentRunId` naming a run tag, as the mlflow client sets it.
fn parent_tag(parent: &str) -> pb::RunTag {
    pb::RunTag {
        key: "mlflow.parentRunId".into(),
        value: parent.into(),
    }
}

/// With auth on, a run goes under a parent only if the caller may read the parent's
/// experiment (REST and gRPC: create, set-tag, log-batch), and the refusal says nothing
/// of where the parent is. Tree answers (ancestors, children, the tree) leave out runs
/// the caller may not read, even where such a run got into the tree (an admin put it
/// there): no name, status or experiment of a stranger's run comes back.
#[tokio::test]
async fn the_run_tree_never_shows_a_run_the_caller_may_not_read() {
    let server = TestServer::start_with_auth(Permission::NoPermissions).await;
    create_user(&server, "alice", "alice-pass-1").await;
    create_user(&server, "bob", "bob-pass-1").await;
    let (alice, bob) = (basic("alice", "alice-pass-1"), basic("bob", "bob-pass-1"));
    let admin = basic("admin", ADMIN_PASSWORD);
    let channel = server.channel().await;
    let mut c = TrackingServiceClient::new(channel.clone());
    let mut tree = HierarchyServiceClient::new(channel.clone());
    let (a_exp, a_run) = experiment_and_run(&mut c, &alice, "private").await;
    let (b_exp, b_run) = experiment_and_run(&mut c, &bob, "mine").await;

    // Every way of naming a parent is refused without READ on the parent's experiment.
    let denied = |r: Result<tonic::Response<_>, tonic::Status>, what: &str| {
        let e = r.map(|_: tonic::Response<()>| ()).expect_err(what);
        assert_eq!(e.code(), Code::PermissionDenied, "{what}: {e:?}");
        assert!(
            !e.message().contains(&format!("experiment {a_exp}")),
            "{e:?}"
        );
    };
    denied(
        c.set_tag(with(
            &bob,
            pb::SetTagRequest {
                run_id: b_run.clone(),
                key: "mlflow.parentRunId".into(),
                value: a_run.clone(),
            },
        ))
        .await
        .map(|r| r.map(|_| ())),
        "SetTag",
    );
    denied(
        c.create_run(with(
            &bob,
            pb::CreateRunRequest {
                experiment_id: b_exp.clone(),
                tags: vec![parent_tag(&a_run)],
                ..Default::default()
            },
        ))
        .await
        .map(|r| r.map(|_| ())),
        "CreateRun",
    );
    denied(
        c.log_batch(with(
            &bob,
            pb::LogBatchRequest {
                run_id: b_run.clone(),
                tags: vec![parent_tag(&a_run)],
                ..Default::default()
            },
        ))
        .await
        .map(|r| r.map(|_| ())),
        "LogBatch",
    );
    for (path, body) in [
        (
            "/api/2.0/mlflow/runs/set-tag",
            serde_json::json!({"run_id": b_run, "key": "mlflow.parentRunId", "value": a_run}),
        ),
        (
            "/api/2.0/mlflow/runs/create",
            serde_json::json!({"experiment_id": b_exp, "tags": [{"key": "mlflow.parentRunId", "value": a_run}]}),
        ),
        (
            "/api/2.0/mlflow/runs/log-batch",
            serde_json::json!({"run_id": b_run, "tags": [{"key": "mlflow.parentRunId", "value": a_run}]}),
        ),
    ] {
        let (status, answer) = rest_as(&server, &bob, path, body).await;
        assert_eq!(status, 403, "{path}: {answer}");
        assert_eq!(answer["error_code"], "PERMISSION_DENIED", "{path}");
    }
    // Nothing changed: bob's run is still a root.
    let ancestors = tree
        .get_ancestors(with(
            &bob,
            pb::GetAncestorsRequest {
                run_id: b_run.clone(),
            },
        ))
        .await
        .answer()
        .ancestors;
    assert!(ancestors.is_empty());

    // An admin may hang bob's run under alice's; neither then sees the other's run.
    c.set_tag(with(
        &admin,
        pb::SetTagRequest {
            run_id: b_run.clone(),
            key: "mlflow.parentRunId".into(),
            value: a_run.clone(),
        },
    ))
    .await
    .expect("an admin reads everything");
    let ancestors = tree
        .get_ancestors(with(
            &bob,
            pb::GetAncestorsRequest {
                run_id: b_run.clone(),
            },
        ))
        .await
        .answer()
        .ancestors;
    assert!(ancestors.is_empty(), "{ancestors:?}");
    let (status, answer) = get_as(
        &server,
        &bob,
        &format!("/api/arbor/v1/runs/ancestors?run_id={b_run}"),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["ancestors"], serde_json::json!([]), "{answer}");
    let root = tree
        .get_run_tree(with(
            &alice,
            pb::GetRunTreeRequest {
                run_id: a_run.clone(),
                ..Default::default()
            },
        ))
        .await
        .answer()
        .root
        .expect("root");
    assert!(root.children.is_empty(), "{root:?}");
    assert_eq!(root.child_count, 0);
    let children = tree
        .list_children(with(
            &alice,
            pb::ListChildrenRequest {
                run_id: a_run.clone(),
                ..Default::default()
            },
        ))
        .await
        .answer()
        .runs;
    assert!(children.is_empty());
    for path in [
        format!("/api/arbor/v1/runs/tree?run_id={a_run}"),
        format!("/api/arbor/v1/runs/children?run_id={a_run}"),
    ] {
        let (status, answer) = get_as(&server, &alice, &path).await;
        assert_eq!(status, 200, "{answer}");
        assert!(!answer.to_string().contains(&b_run), "{path}: {answer}");
    }
    // A path of names reaches only what the caller may read: not into an experiment
    // without READ, and not down to a stranger's run hung below one's own.
    let mut names = Vec::new();
    for id in [&a_run, &b_run] {
        let run = c
            .get_run(with(&admin, pb::GetRunRequest { run_id: id.clone() }))
            .await
            .answer()
            .run
            .and_then(|r| r.info)
            .expect("run info");
        names.push(run.run_name);
    }
    let by_path = |auth: &str, path: Vec<String>| {
        let mut tree = tree.clone();
        let req = with(
            auth,
            pb::GetRunByPathRequest {
                experiment_id: a_exp.clone(),
                path,
            },
        );
        async move { tree.get_run_by_path(req).await }
    };
    let found = by_path(&alice, vec![names[0].clone()]).await.answer();
    assert_eq!(found.run.and_then(|r| r.info).expect("info").run_id, a_run);
    let e = by_path(&alice, names.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = by_path(&bob, vec![names[0].clone()]).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let found = by_path(&admin, names.clone()).await.answer();
    assert_eq!(found.run.and_then(|r| r.info).expect("info").run_id, b_run);
    // The admin sees the whole tree.
    let ancestors = tree
        .get_ancestors(with(
            &admin,
            pb::GetAncestorsRequest {
                run_id: b_run.clone(),
            },
        ))
        .await
        .answer()
        .ancestors;
    assert_eq!(ancestors.len(), 1);

    // With READ on alice's experiment, bob may attach a run under hers, and sees it.
    grant(&server, &alice, &a_exp, "bob", "READ").await;
    let child = c
        .create_run(with(
            &bob,
            pb::CreateRunRequest {
                experiment_id: b_exp.clone(),
                tags: vec![parent_tag(&a_run)],
                ..Default::default()
            },
        ))
        .await
        .answer()
        .run
        .and_then(|r| r.info)
        .expect("info")
        .run_id;
    let ancestors = tree
        .get_ancestors(with(&bob, pb::GetAncestorsRequest { run_id: child }))
        .await
        .answer()
        .ancestors;
    assert_eq!(ancestors.len(), 1);
    assert_eq!(ancestors[0].run_id, a_run);
    server.stop_and_check_rebuild().await;
}

/// The proxied artifact routes ask what MLflow's auth app asks: READ to download and
/// list, EDIT to upload, MANAGE to delete (one DELETE can remove an experiment's
/// whole tree).
#[tokio::test]
async fn deleting_artifacts_needs_manage() {
    let server = TestServer::start_with_auth(Permission::NoPermissions).await;
    create_user(&server, "alice", "alice-pass-1").await;
    create_user(&server, "bob", "bob-pass-1").await;
    let (alice, bob) = (basic("alice", "alice-pass-1"), basic("bob", "bob-pass-1"));
    let mut c = TrackingServiceClient::new(server.channel().await);
    let (exp, run) = experiment_and_run(&mut c, &alice, "art").await;
    let file = format!("/api/2.0/mlflow-artifacts/artifacts/{exp}/{run}/artifacts/a.txt");
    let tree = format!("/api/2.0/mlflow-artifacts/artifacts/{exp}");
    let put = |who: &String| {
        let (server, file, who) = (&server, &file, who.clone());
        async move { call_as(server, &who, "PUT", file, None, b"hello".to_vec()).await }
    };
    let (status, _) = put(&alice).await;
    assert_eq!(status, 200);
    let (status, _) = put(&bob).await;
    assert_eq!(status, 403, "no grant: no upload");
    grant(&server, &alice, &exp, "bob", "READ").await;
    let (status, body) = call_as(&server, &bob, "GET", &file, None, vec![]).await;
    assert_eq!((status, body.as_slice()), (200, &b"hello"[..]));
    let (status, _) = put(&bob).await;
    assert_eq!(status, 403, "READ: no upload");
    regrant(&server, &alice, &exp, "bob", "EDIT").await;
    let (status, _) = put(&bob).await;
    assert_eq!(status, 200, "EDIT uploads");
    for path in [&file, &tree] {
        let (status, body) = call_as(&server, &bob, "DELETE", path, None, vec![]).await;
        assert_eq!(status, 403, "EDIT may not delete {path}");
        assert!(String::from_utf8_lossy(&body).contains("PERMISSION_DENIED"));
    }
    let (status, _) = call_as(&server, &bob, "GET", &file, None, vec![]).await;
    assert_eq!(status, 200, "still there");
    regrant(&server, &alice, &exp, "bob", "MANAGE").await;
    let (status, _) = call_as(&server, &bob, "DELETE", &tree, None, vec![]).await;
    assert_eq!(status, 200, "MANAGE deletes");
    let (status, _) = call_as(&server, &bob, "GET", &file, None, vec![]).await;
    assert_eq!(status, 404);
    server.stop().await;
}

/// A wrong password and an unknown name are refused alike and cost one Argon2 check
/// each (an unknown name is checked against a dummy hash), so the time of a refusal
/// does not tell which names exist.
#[tokio::test]
async fn unknown_users_cost_a_password_check_like_known_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = arbor::store::Store::open(dir.path(), &Default::default()).expect("open");
    arbor::auth::bootstrap(&store, "admin", Some(ADMIN_PASSWORD.into()))
        .await
        .expect("admin");
    let auth = arbor::auth::Authenticator::new(
        store.clone(),
        arbor::auth::Policy {
            enabled: true,
            default_permission: Permission::Read,
        },
    );
    let before = auth.verifications();
    let known = auth
        .check_password("admin", "wrong")
        .await
        .expect_err("wrong password");
    assert_eq!(auth.verifications(), before + 1);
    let unknown = auth
        .check_password("nobody", "wrong")
        .await
        .expect_err("unknown user");
    assert_eq!(
        auth.verifications(),
        before + 2,
        "an unknown name costs one too"
    );
    assert_eq!(known.to_string(), unknown.to_string());
    let header = basic("nobody", "x");
    let refused = auth
        .authenticate(Some(header.as_bytes()))
        .await
        .expect_err("unknown user");
    assert_eq!(refused.to_string(), known.to_string());
    assert_eq!(auth.verifications(), before + 3);
    auth.check_password("admin", ADMIN_PASSWORD)
        .await
        .expect("the right password");
    store.close().await;
}

/// Importing a run whose id exists in an experiment the caller may not read answers as
/// if there were no such run: the other experiment is not named.
#[tokio::test]
async fn importing_a_strangers_run_reveals_nothing() {
    let server = TestServer::start_with_auth(Permission::NoPermissions).await;
    create_user(&server, "alice", "alice-pass-1").await;
    create_user(&server, "bob", "bob-pass-1").await;
    let (alice, bob) = (basic("alice", "alice-pass-1"), basic("bob", "bob-pass-1"));
    let mut c = TrackingServiceClient::new(server.channel().await);
    let (a_exp, a_run) = experiment_and_run(&mut c, &alice, "private").await;
    let (b_exp, _) = experiment_and_run(&mut c, &bob, "mine").await;
    let import = serde_json::json!({"run_id": a_run, "experiment_id": b_exp, "run_name": "x"});
    let (status, answer) = rest_as(&server, &bob, "/api/arbor/v1/import/run", import.clone()).await;
    assert_eq!(status, 404, "{answer}");
    assert_eq!(answer["error_code"], "RESOURCE_DOES_NOT_EXIST");
    assert!(
        !answer.to_string().contains(&format!("experiment {a_exp}")),
        "{answer}"
    );
    // With READ the caller learns where the run is, as before.
    grant(&server, &alice, &a_exp, "bob", "READ").await;
    let (status, answer) = rest_as(&server, &bob, "/api/arbor/v1/import/run", import).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap_or("")
            .contains(&format!("experiment {a_exp}")),
        "{answer}"
    );
    server.stop().await;
}

/// Revoking a token ends the streams it opened (gRPC: UNAUTHENTICATED; SSE: an error
/// event, then the end), and so does deleting a user whose password opened one;
/// streams of other credentials go on.
#[tokio::test]
async fn revoked_tokens_and_deleted_users_end_their_open_streams() {
    let server = TestServer::start_with_auth(Permission::NoPermissions).await;
    create_user(&server, "bob", "bob-pass-1").await;
    create_user(&server, "carol", "carol-pass-1").await;
    let (bob, carol) = (basic("bob", "bob-pass-1"), basic("carol", "carol-pass-1"));
    let admin = basic("admin", ADMIN_PASSWORD);
    let channel = server.channel().await;
    let mut c = TrackingServiceClient::new(channel.clone());
    let (_, run) = experiment_and_run(&mut c, &bob, "b").await;
    let (status, token) = rest_as(
        &server,
        &bob,
        "/api/arbor/v1/tokens/create",
        serde_json::json!({"description": "stream"}),
    )
    .await;
    assert_eq!(status, 200, "{token}");
    let (token_id, bearer) = (
        token["token_id"].as_str().expect("id").to_string(),
        format!("Bearer {}", token["token"].as_str().expect("token")),
    );
    let mut w = WatchServiceClient::new(channel.clone());
    let watch = |auth: &str| {
        with(
            auth,
            pb::WatchMetricsRequest {
                scope: Some(pb::watch_metrics_request::Scope::RunId(run.clone())),
                keys: vec![],
                from_seq: None,
            },
        )
    };
    let mut by_token = w.watch_metrics(watch(&bearer)).await.answer();
    let mut by_password = w.watch_metrics(watch(&bob)).await.answer();
    let mut carols = w
        .watch_events(with(&carol, pb::WatchEventsRequest::default()))
        .await
        .answer();
    // Each stream opens with its position.
    by_token.message().await.expect("position");
    by_password.message().await.expect("position");
    // The SSE stream, with the same token.
    let mut sse = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    sse.write_all(
        format!(
            "GET /api/arbor/v1/stream?run_id={run} HTTP/1.1\r\nHost: localhost\r\nAuthorization: {bearer}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .expect("send");
    let mut lines = tokio::io::BufReader::new(sse).lines();
    let status = lines.next_line().await.expect("read").expect("status");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");

    let (status, answer) = rest_as(
        &server,
        &bob,
        "/api/arbor/v1/tokens/revoke",
        serde_json::json!({"token_id": token_id}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let end = loop {
        match by_token.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended without a status"),
            Err(e) => break e,
        }
    };
    assert_eq!(end.code(), Code::Unauthenticated, "{end:?}");
    assert!(end.message().contains("revoked"), "{end:?}");
    let mut saw_error = false;
    while let Some(line) = lines.next_line().await.expect("read") {
        if line.starts_with("event:") && line.contains("error") {
            saw_error = true;
        }
        if saw_error && line.contains("revoked") {
            break;
        }
    }
    assert!(saw_error, "the SSE stream said why it ended");

    // bob's password stream outlived the token; deleting bob ends it.
    let (status, _) = call_as(
        &server,
        &admin,
        "DELETE",
        "/api/2.0/mlflow/users/delete",
        Some("application/json"),
        serde_json::json!({"username": "bob"})
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_eq!(status, 200);
    let end = loop {
        match by_password.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended without a status"),
            Err(e) => break e,
        }
    };
    assert_eq!(end.code(), Code::Unauthenticated, "{end:?}");
    // An admin's stream shows everything: taking the admin right away ends it.
    create_user(&server, "dave", "dave-pass-1").await;
    let set_admin = |on: bool| {
        call_as(
            &server,
            &admin,
            "PATCH",
            "/api/2.0/mlflow/users/update-admin",
            Some("application/json"),
            serde_json::json!({"username": "dave", "is_admin": on})
                .to_string()
                .into_bytes(),
        )
    };
    assert_eq!(set_admin(true).await.0, 200);
    let mut daves = w
        .watch_events(with(
            &basic("dave", "dave-pass-1"),
            pb::WatchEventsRequest::default(),
        ))
        .await
        .answer();
    assert_eq!(set_admin(false).await.0, 200);
    let end = loop {
        match daves.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended without a status"),
            Err(e) => break e,
        }
    };
    assert_eq!(end.code(), Code::Unauthenticated, "{end:?}");
    assert!(end.message().contains("no longer an admin"), "{end:?}");
    // carol's stream goes on: it delivers her own next change.
    let (c_exp, _) = experiment_and_run(&mut c, &carol, "c").await;
    loop {
        let ev = carols.message().await.expect("open").expect("an event");
        if matches!(&ev.payload, Some(pb::event::Payload::ExperimentCreated(e)) if e.experiment_id == c_exp)
        {
            break;
        }
    }
    drop((carols, lines));
    server.stop().await;
}
