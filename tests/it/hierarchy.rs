//! HierarchyService and `arbor tree` against a real server.

use crate::common;
use common::Answer;

use arbor::pb::{
    self, hierarchy_service_client::HierarchyServiceClient,
    tracking_service_client::TrackingServiceClient,
};
use common::TestServer;
use tonic::Code;
use tonic::transport::Channel;

async fn run(
    c: &mut TrackingServiceClient<Channel>,
    name: &str,
    start: i64,
    parent: Option<&str>,
    loss: Option<f64>,
) -> String {
    let tags = parent
        .map(|p| {
            vec![pb::RunTag {
                key: "mlflow.parentRunId".into(),
                value: p.into(),
            }]
        })
        .unwrap_or_default();
    let id = common::new_run_id(
        c,
        pb::CreateRunRequest {
            run_name: name.into(),
            start_time: Some(start),
            tags,
            ..Default::default()
        },
    )
    .await;
    if let Some(v) = loss {
        c.log_metric(pb::LogMetricRequest {
            run_id: id.clone(),
            key: "loss".into(),
            value: v,
            timestamp: 1,
            step: 1,
        })
        .await
        .unwrap();
    }
    id
}

fn names(nodes: &[pb::RunNode]) -> Vec<String> {
    nodes
        .iter()
        .map(|n| n.info.as_ref().unwrap().run_name.clone())
        .collect()
}

/// GetRunTree, ListChildren and GetAncestors follow the hierarchy, and cascading delete and restore move whole subtrees.
#[tokio::test]
async fn tree_children_ancestors_and_cascade() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let mut h = HierarchyServiceClient::new(server.channel().await);
    let root = run(&mut c, "root", 100, None, Some(1.0)).await;
    let late = run(&mut c, "late", 300, Some(&root), Some(0.5)).await;
    let early = run(&mut c, "early", 200, Some(&root), None).await;
    let leaf = run(&mut c, "leaf", 400, Some(&early), Some(0.25)).await;
    let gone = run(&mut c, "gone", 250, Some(&root), None).await;
    c.delete_run(pb::DeleteRunRequest {
        run_id: gone.clone(),
        cascade: false,
    })
    .await
    .unwrap();

    let tree = |max_depth: Option<u32>, view: pb::ViewType| pb::GetRunTreeRequest {
        run_id: root.clone(),
        max_depth,
        view_type: view as i32,
    };
    let t = h
        .get_run_tree(tree(None, pb::ViewType::ActiveOnly))
        .await
        .answer()
        .root
        .unwrap();
    assert_eq!(t.info.as_ref().unwrap().run_name, "root");
    assert_eq!(t.latest_metrics[0].value, 1.0);
    assert_eq!(
        names(&t.children),
        vec!["early", "late"],
        "start-time order, deleted left out"
    );
    assert_eq!(t.child_count, 2);
    assert_eq!(names(&t.children[0].children), vec!["leaf"]);
    assert_eq!(t.children[0].children[0].latest_metrics[0].value, 0.25);
    let all = h
        .get_run_tree(tree(None, pb::ViewType::All))
        .await
        .answer()
        .root
        .unwrap();
    assert_eq!(names(&all.children), vec!["early", "gone", "late"]);
    let shallow = h
        .get_run_tree(tree(Some(1), pb::ViewType::ActiveOnly))
        .await
        .answer()
        .root
        .unwrap();
    assert!(shallow.children[0].children.is_empty());
    assert_eq!(
        shallow.children[0].child_count, 1,
        "counted though not expanded"
    );
    let alone = h
        .get_run_tree(tree(Some(0), pb::ViewType::ActiveOnly))
        .await
        .answer()
        .root
        .unwrap();
    assert!(alone.children.is_empty());
    assert_eq!(alone.child_count, 2);

    // ListChildren pages in start-time order.
    let mut got = Vec::new();
    let mut token = String::new();
    loop {
        let page = h
            .list_children(pb::ListChildrenRequest {
                run_id: root.clone(),
                max_results: Some(1),
                page_token: token,
                view_type: pb::ViewType::All as i32,
            })
            .await
            .answer();
        got.extend(page.runs.into_iter().map(|r| r.info.unwrap().run_name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(got, vec!["early", "gone", "late"]);

    let path = h
        .get_ancestors(pb::GetAncestorsRequest {
            run_id: leaf.clone(),
        })
        .await
        .answer()
        .ancestors;
    let path: Vec<&str> = path.iter().map(|r| r.run_name.as_str()).collect();
    assert_eq!(path, vec!["early", "root"], "parent first, root last");
    assert!(
        h.get_ancestors(pb::GetAncestorsRequest {
            run_id: root.clone()
        })
        .await
        .answer()
        .ancestors
        .is_empty()
    );
    assert_eq!(
        h.get_ancestors(pb::GetAncestorsRequest {
            run_id: "nope".into()
        })
        .await
        .unwrap_err()
        .code(),
        Code::NotFound
    );
    assert_eq!(
        h.get_run_tree(pb::GetRunTreeRequest {
            run_id: "nope".into(),
            ..Default::default()
        })
        .await
        .unwrap_err()
        .code(),
        Code::NotFound
    );

    // Cascade: the whole subtree goes and comes back.
    c.delete_run(pb::DeleteRunRequest {
        run_id: early.clone(),
        cascade: true,
    })
    .await
    .unwrap();
    for id in [&early, &leaf] {
        let r = c
            .get_run(pb::GetRunRequest { run_id: id.clone() })
            .await
            .answer()
            .run
            .unwrap();
        assert_eq!(r.info.unwrap().lifecycle_stage, "deleted");
    }
    assert_eq!(
        c.get_run(pb::GetRunRequest {
            run_id: late.clone()
        })
        .await
        .answer()
        .run
        .unwrap()
        .info
        .unwrap()
        .lifecycle_stage,
        "active"
    );
    c.restore_run(pb::RestoreRunRequest {
        run_id: early.clone(),
        cascade: true,
    })
    .await
    .unwrap();
    let r = c
        .get_run(pb::GetRunRequest {
            run_id: leaf.clone(),
        })
        .await
        .answer()
        .run
        .unwrap();
    assert_eq!(r.info.unwrap().lifecycle_stage, "active");
    // Without cascade only the run itself.
    c.delete_run(pb::DeleteRunRequest {
        run_id: early.clone(),
        cascade: false,
    })
    .await
    .unwrap();
    let r = c
        .get_run(pb::GetRunRequest {
            run_id: leaf.clone(),
        })
        .await
        .answer()
        .run
        .unwrap();
    assert_eq!(r.info.unwrap().lifecycle_stage, "active");
    server.stop_and_check_rebuild().await;
}

/// Concurrent GetOrCreateChildRun calls for one name create exactly one child and all get it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_or_create_child_run_is_idempotent_under_concurrency() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let h = HierarchyServiceClient::new(server.channel().await);
    let parent = run(&mut c, "pipeline", 1, None, None).await;
    let ask = |name: &str| pb::GetOrCreateChildRunRequest {
        parent_run_id: parent.clone(),
        run_name: name.into(),
        tags: vec![pb::RunTag {
            key: "stage".into(),
            value: name.into(),
        }],
        ..Default::default()
    };
    let mut calls = Vec::new();
    for _ in 0..16 {
        let mut h = h.clone();
        let req = ask("train");
        calls.push(tokio::spawn(async move {
            h.get_or_create_child_run(req).await.answer()
        }));
    }
    let mut ids = std::collections::HashSet::new();
    let mut created = 0;
    for call in calls {
        let answer = call.await.unwrap();
        let run = answer.run.unwrap();
        assert_eq!(run.info.as_ref().unwrap().parent_run_id, parent);
        assert!(
            run.data
                .unwrap()
                .tags
                .iter()
                .any(|t| t.key == "stage" && t.value == "train")
        );
        ids.insert(run.info.unwrap().run_id);
        created += usize::from(answer.created);
    }
    assert_eq!(ids.len(), 1, "every caller got the same run");
    assert_eq!(created, 1, "it was created once");
    let mut h = h;
    let other = h.get_or_create_child_run(ask("eval")).await.answer();
    assert!(other.created);
    assert!(!ids.contains(&other.run.unwrap().info.unwrap().run_id));

    // A deleted child does not count: a new one is made.
    let train = ids.into_iter().next().unwrap();
    c.delete_run(pb::DeleteRunRequest {
        run_id: train.clone(),
        cascade: false,
    })
    .await
    .unwrap();
    let again = h.get_or_create_child_run(ask("train")).await.answer();
    assert!(again.created);
    assert_ne!(again.run.unwrap().info.unwrap().run_id, train);

    let err = h
        .get_or_create_child_run(pb::GetOrCreateChildRunRequest {
            parent_run_id: "nope".into(),
            run_name: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = h
        .get_or_create_child_run(pb::GetOrCreateChildRunRequest {
            parent_run_id: parent.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    server.stop_and_check_rebuild().await;
}

/// `arbor tree` prints a run's subtree, indented, with statuses and the chosen metric.
#[tokio::test]
async fn the_tree_command_prints_an_indented_tree() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let root = run(&mut c, "root", 1, None, Some(0.5)).await;
    let a = run(&mut c, "a", 2, Some(&root), Some(0.25)).await;
    let a1 = run(&mut c, "a1", 3, Some(&a), None).await;
    let b = run(&mut c, "b", 4, Some(&root), Some(0.125)).await;
    c.update_run(pb::UpdateRunRequest {
        run_id: a1.clone(),
        status: Some(pb::RunStatus::Failed as i32),
        ..Default::default()
    })
    .await
    .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_arbor"))
        .args(["tree", &root, "--metric", "loss", "--server", &server.url()])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let expected = format!(
        "root  {root}  RUNNING  loss=0.5\n├── a  {a}  RUNNING  loss=0.25\n│   └── a1  {a1}  FAILED  loss=-\n└── b  {b}  RUNNING  loss=0.125\n"
    );
    assert_eq!(text, expected);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_arbor"))
        .args(["tree", "missing", "--server", &server.url()])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("NotFound")
            || String::from_utf8_lossy(&out.stderr).contains("not found")
    );
    server.stop().await;
}

/// A tree may span experiments and hang under a deleted parent, as in MLflow: the tree
/// RPCs and the root tag follow it, and an experiment's search keeps to its own runs.
#[tokio::test]
async fn trees_span_experiments_and_deleted_parents() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let mut h = HierarchyServiceClient::new(server.channel().await);
    let other = common::create_experiment(&mut c, "elsewhere").await;
    let root = run(&mut c, "root", 1, None, None).await;
    let child = common::new_run_id(
        &mut c,
        pb::CreateRunRequest {
            experiment_id: other.clone(),
            run_name: "child".into(),
            start_time: Some(2),
            tags: vec![pb::RunTag {
                key: "mlflow.parentRunId".into(),
                value: root.clone(),
            }],
            ..Default::default()
        },
    )
    .await;
    c.delete_run(pb::DeleteRunRequest {
        run_id: child.clone(),
        cascade: false,
    })
    .await
    .unwrap();
    let leaf = run(&mut c, "leaf", 3, Some(&child), None).await;

    let tree = h
        .get_run_tree(pb::GetRunTreeRequest {
            run_id: root.clone(),
            max_depth: None,
            view_type: pb::ViewType::All as i32,
        })
        .await
        .answer()
        .root
        .unwrap();
    assert_eq!(names(&tree.children), vec!["child"]);
    assert_eq!(names(&tree.children[0].children), vec!["leaf"]);
    let ancestors = h
        .get_ancestors(pb::GetAncestorsRequest {
            run_id: leaf.clone(),
        })
        .await
        .answer()
        .ancestors;
    let ids: Vec<&str> = ancestors.iter().map(|a| a.run_id.as_str()).collect();
    assert_eq!(ids, vec![child.as_str(), root.as_str()]);

    let in_default = c
        .search_runs(pb::SearchRunsRequest {
            experiment_ids: vec!["0".into()],
            filter: format!("tags.mlflow.rootRunId = '{root}'"),
            ..Default::default()
        })
        .await
        .answer()
        .runs;
    let found: Vec<String> = in_default
        .iter()
        .map(|r| r.info.as_ref().unwrap().run_id.clone())
        .collect();
    assert_eq!(
        found,
        vec![leaf.clone(), root.clone()],
        "only experiment 0's runs"
    );
    server.stop_and_check_rebuild().await;
}

/// The same queries over REST (`/api/arbor/v1/runs/{tree,children,ancestors}`), in
/// MLflow's JSON shapes, with MLflow's error codes.
#[tokio::test]
async fn tree_children_and_ancestors_over_rest() {
    let s = TestServer::start().await;
    let mut c = s.client().await;
    let root = run(&mut c, "root", 1, None, None).await;
    let a = run(&mut c, "a", 2, Some(&root), Some(0.5)).await;
    let b = run(&mut c, "b", 3, Some(&root), None).await;
    let a1 = run(&mut c, "a1", 4, Some(&a), Some(0.25)).await;

    let (status, tree) = common::rest(
        s.addr,
        "GET",
        &format!("/api/arbor/v1/runs/tree?run_id={root}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{tree}");
    let top = &tree["root"];
    assert_eq!(top["run"]["info"]["run_name"], "root");
    assert_eq!(top["child_count"], 2);
    let kids: Vec<&str> = top["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["run"]["info"]["run_name"].as_str().unwrap())
        .collect();
    assert_eq!(kids, ["a", "b"], "start-time order");
    let grandchild = &top["children"][0]["children"][0]["run"];
    assert_eq!(grandchild["info"]["run_id"], a1.as_str());
    assert_eq!(grandchild["data"]["metrics"][0]["value"], 0.25);

    let (_, shallow) = common::rest(
        s.addr,
        "GET",
        &format!("/api/arbor/v1/runs/tree?run_id={root}&max_depth=1"),
        None,
    )
    .await;
    let first = &shallow["root"]["children"][0];
    assert_eq!(first["child_count"], 1);
    assert!(first.get("children").is_none(), "not expanded: {first}");

    let (status, page) = common::rest(
        s.addr,
        "GET",
        &format!("/api/arbor/v1/runs/children?run_id={root}&max_results=1"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["runs"][0]["info"]["run_id"], a.as_str());
    let token = page["next_page_token"].as_str().unwrap().to_string();
    let (_, page) = common::rest(
        s.addr,
        "GET",
        &format!("/api/arbor/v1/runs/children?run_id={root}&max_results=1&page_token={token}"),
        None,
    )
    .await;
    assert_eq!(page["runs"][0]["info"]["run_id"], b.as_str());
    assert!(page.get("next_page_token").is_none());

    let (_, up) = common::rest(
        s.addr,
        "GET",
        &format!("/api/arbor/v1/runs/ancestors?run_id={a1}"),
        None,
    )
    .await;
    let ids: Vec<&str> = up["ancestors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [a.as_str(), root.as_str()], "parent first");

    for (path, status, code) in [
        ("/api/arbor/v1/runs/tree", 400, "INVALID_PARAMETER_VALUE"),
        (
            "/api/arbor/v1/runs/tree?run_id=nope",
            404,
            "RESOURCE_DOES_NOT_EXIST",
        ),
        (
            "/api/arbor/v1/runs/ancestors?run_id=nope",
            404,
            "RESOURCE_DOES_NOT_EXIST",
        ),
    ] {
        let (got, body) = common::rest(s.addr, "GET", path, None).await;
        assert_eq!(
            (got, body["error_code"].as_str()),
            (status, Some(code)),
            "{path}: {body}"
        );
    }
    let (got, body) = common::rest(
        s.addr,
        "GET",
        &format!("/api/arbor/v1/runs/tree?run_id={root}&max_depth=-1"),
        None,
    )
    .await;
    assert_eq!(got, 400, "{body}");
    s.stop().await;
}

/// The seed's question in one call: the sub-child named X under child Y of root Z, by
/// names from the top, over gRPC and REST. The newest active run wins where names
/// repeat; a deleted run, or a child named like a root, is not found; errors name the
/// step that failed.
#[tokio::test]
async fn a_run_is_found_by_its_path_of_names() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let mut h = HierarchyServiceClient::new(server.channel().await);
    let older = run(&mut c, "sweep", 1, None, None).await;
    let newer = run(&mut c, "sweep", 2, None, None).await;
    let newest_deleted = run(&mut c, "sweep", 3, None, None).await;
    c.delete_run(pb::DeleteRunRequest {
        run_id: newest_deleted,
        cascade: false,
    })
    .await
    .answer();
    run(&mut c, "fold-1", 4, Some(&older), None).await;
    let fold = run(&mut c, "fold-1", 5, Some(&newer), None).await;
    let seed = run(&mut c, "seed-0", 6, Some(&fold), None).await;

    let at = |path: &[&str]| {
        let mut h = h.clone();
        let req = pb::GetRunByPathRequest {
            experiment_id: "0".into(),
            path: path.iter().map(|s| s.to_string()).collect(),
        };
        async move { h.get_run_by_path(req).await }
    };
    let id = |r: pb::GetRunByPathResponse| r.run.and_then(|r| r.info).unwrap().run_id;
    assert_eq!(id(at(&["sweep"]).await.answer()), newer);
    assert_eq!(id(at(&["sweep", "fold-1", "seed-0"]).await.answer()), seed);
    let missing = at(&["sweep", "fold-9"]).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert!(
        missing.message().contains("'fold-9' under sweep"),
        "{}",
        missing.message()
    );
    assert_eq!(at(&["fold-1"]).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(at(&[]).await.unwrap_err().code(), Code::InvalidArgument);
    let unknown = h
        .get_run_by_path(pb::GetRunByPathRequest {
            experiment_id: "404".into(),
            path: vec!["sweep".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    // REST: repeated `path` in a query, or a JSON list.
    let (status, body) = common::rest(
        server.addr,
        "GET",
        "/api/arbor/v1/runs/by-path?experiment_id=0&path=sweep&path=fold-1&path=seed-0",
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["run"]["info"]["run_id"], seed.as_str());
    let (status, body) = common::rest(
        server.addr,
        "POST",
        "/api/arbor/v1/runs/by-path",
        Some(serde_json::json!({"experiment_id": "0", "path": ["sweep", "fold-1"]})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["run"]["info"]["run_id"], fold.as_str());
    let (status, body) = common::rest(
        server.addr,
        "POST",
        "/api/arbor/v1/runs/by-path",
        Some(serde_json::json!({"experiment_id": "0", "path": ["nope"]})),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error_code"], "RESOURCE_DOES_NOT_EXIST");
    server.stop().await;
}
