//! TrackingService semantics against a real server over gRPC: experiments, runs,
//! params, tags, metrics, batches, history, hierarchy, errors, and the rebuild check.

use crate::common;
use common::Answer;

use arbor::pb;
use common::{TestServer, create_experiment};
use tonic::Code;

type Client = common::Tracking;

async fn create_run(c: &mut Client, exp: &str, tags: &[(&str, &str)]) -> pb::Run {
    c.new_run(pb::CreateRunRequest {
        experiment_id: exp.into(),
        tags: tags
            .iter()
            .map(|(k, v)| pb::RunTag {
                key: k.to_string(),
                value: v.to_string(),
            })
            .collect(),
        ..Default::default()
    })
    .await
}

async fn get_run(c: &mut Client, id: &str) -> pb::Run {
    c.run(id).await
}

fn info(r: &pb::Run) -> &pb::RunInfo {
    r.info.as_ref().expect("info")
}

fn tag<'a>(r: &'a pb::Run, key: &str) -> Option<&'a str> {
    r.data
        .as_ref()?
        .tags
        .iter()
        .find(|t| t.key == key)
        .map(|t| t.value.as_str())
}

fn metric(key: &str, value: f64, timestamp: i64, step: i64) -> pb::Metric {
    pb::Metric {
        key: key.into(),
        value,
        timestamp,
        step,
    }
}

async fn log_batch(
    c: &mut Client,
    run_id: &str,
    metrics: Vec<pb::Metric>,
    params: Vec<(&str, &str)>,
    tags: Vec<(&str, &str)>,
) -> Result<(), tonic::Status> {
    c.log_batch(pb::LogBatchRequest {
        run_id: run_id.into(),
        metrics,
        params: params
            .into_iter()
            .map(|(k, v)| pb::Param {
                key: k.into(),
                value: v.into(),
            })
            .collect(),
        tags: tags
            .into_iter()
            .map(|(k, v)| pb::RunTag {
                key: k.into(),
                value: v.into(),
            })
            .collect(),
    })
    .await
    .map(|_| ())
}

async fn set_tag(
    c: &mut Client,
    run_id: &str,
    key: &str,
    value: &str,
) -> Result<(), tonic::Status> {
    c.set_tag(pb::SetTagRequest {
        run_id: run_id.into(),
        key: key.into(),
        value: value.into(),
    })
    .await
    .map(|_| ())
}

/// Experiments: unique names, rename, delete and restore, tags, and MLflow's messages for each refusal.
#[tokio::test]
async fn experiments_lifecycle_names_and_tags() {
    let server = TestServer::start().await;
    let mut c = server.tracking().await;

    let default = c.experiment("0").await;
    assert_eq!(default.name, "Default");
    assert_eq!(default.lifecycle_stage, "active");
    assert_eq!(default.artifact_location, "mlflow-artifacts:/0");

    let id = create_experiment(&mut c, "exp-a").await;
    assert_eq!(id, "1");
    let err = c
        .create_experiment(pb::CreateExperimentRequest {
            name: "exp-a".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert!(err.message().contains("exp-a"), "{}", err.message());
    let err = c
        .create_experiment(pb::CreateExperimentRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let by_name = c
        .get_experiment_by_name(pb::GetExperimentByNameRequest {
            experiment_name: "exp-a".into(),
        })
        .await
        .answer()
        .experiment
        .unwrap();
    assert_eq!(by_name.experiment_id, id);
    let err = c
        .get_experiment_by_name(pb::GetExperimentByNameRequest {
            experiment_name: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    for bad in ["x", "-1"] {
        let err = c
            .get_experiment(pb::GetExperimentRequest {
                experiment_id: bad.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad}");
    }
    let err = c
        .get_experiment(pb::GetExperimentRequest {
            experiment_id: "99".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // Rename, and the old name is free again; renaming onto a taken name is refused.
    c.update_experiment(pb::UpdateExperimentRequest {
        experiment_id: id.clone(),
        new_name: "exp-b".into(),
    })
    .await
    .unwrap();
    create_experiment(&mut c, "exp-a").await;
    let err = c
        .update_experiment(pb::UpdateExperimentRequest {
            experiment_id: id.clone(),
            new_name: "exp-a".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);

    // Tags.
    c.set_experiment_tag(pb::SetExperimentTagRequest {
        experiment_id: id.clone(),
        key: "team".into(),
        value: "vision".into(),
    })
    .await
    .unwrap();
    let e = c
        .get_experiment(pb::GetExperimentRequest {
            experiment_id: id.clone(),
        })
        .await
        .answer()
        .experiment
        .unwrap();
    assert_eq!(e.name, "exp-b");
    assert_eq!(
        e.tags,
        vec![pb::ExperimentTag {
            key: "team".into(),
            value: "vision".into()
        }]
    );
    c.delete_experiment_tag(pb::DeleteExperimentTagRequest {
        experiment_id: id.clone(),
        key: "team".into(),
    })
    .await
    .unwrap();
    let err = c
        .delete_experiment_tag(pb::DeleteExperimentTagRequest {
            experiment_id: id.clone(),
            key: "team".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // Delete marks the runs deleted; names stay taken; restore brings runs back.
    let run = create_run(&mut c, &id, &[]).await;
    let run_id = info(&run).run_id.clone();
    c.delete_experiment(pb::DeleteExperimentRequest {
        experiment_id: id.clone(),
    })
    .await
    .unwrap();
    assert_eq!(
        info(&get_run(&mut c, &run_id).await).lifecycle_stage,
        "deleted"
    );
    let err = c
        .create_experiment(pb::CreateExperimentRequest {
            name: "exp-b".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::AlreadyExists,
        "names are unique across deleted experiments"
    );
    let err = c
        .update_experiment(pb::UpdateExperimentRequest {
            experiment_id: id.clone(),
            new_name: "exp-c".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let err = c
        .create_run(pb::CreateRunRequest {
            experiment_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);

    let search = |view: pb::ViewType| pb::SearchExperimentsRequest {
        view_type: view as i32,
        ..Default::default()
    };
    let active = c
        .search_experiments(search(pb::ViewType::ActiveOnly))
        .await
        .answer();
    let names: Vec<_> = active.experiments.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        vec!["exp-a", "Default"],
        "newest first, Default last"
    );
    let deleted = c
        .search_experiments(search(pb::ViewType::DeletedOnly))
        .await
        .answer();
    assert_eq!(deleted.experiments.len(), 1);
    let all = c
        .search_experiments(search(pb::ViewType::All))
        .await
        .answer();
    assert_eq!(all.experiments.len(), 3);

    c.restore_experiment(pb::RestoreExperimentRequest {
        experiment_id: id.clone(),
    })
    .await
    .unwrap();
    assert_eq!(
        info(&get_run(&mut c, &run_id).await).lifecycle_stage,
        "active"
    );
    let err = c
        .restore_experiment(pb::RestoreExperimentRequest { experiment_id: id })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "restoring an active experiment");

    server.stop_and_check_rebuild().await;
}

/// SearchExperiments pages with opaque tokens that end on the last page.
#[tokio::test]
async fn search_experiments_pages() {
    let server = TestServer::start().await;
    let mut c = server.tracking().await;
    for i in 0..5 {
        create_experiment(&mut c, &format!("e{i}")).await;
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .search_experiments(pb::SearchExperimentsRequest {
                max_results: Some(2),
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .answer();
        assert!(page.experiments.len() <= 2);
        seen.extend(page.experiments.into_iter().map(|e| e.experiment_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    // Equal creation times are possible; ties go by id ascending, Default (oldest) last.
    assert_eq!(seen.len(), 6);
    assert_eq!(seen.last().map(String::as_str), Some("0"));
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 6, "no experiment twice across pages");

    let err = c
        .search_experiments(pb::SearchExperimentsRequest {
            page_token: "garbage".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    for bad in [0, 50_001] {
        let err = c
            .search_experiments(pb::SearchExperimentsRequest {
                max_results: Some(bad),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "max_results {bad}");
    }
    server.stop_and_check_rebuild().await;
}

/// Runs: generated and given names kept in sync with mlflow.runName, status and end time, delete and restore.
#[tokio::test]
async fn runs_names_status_and_lifecycle() {
    let server = TestServer::start().await;
    let mut c = server.tracking().await;

    // No experiment id: the Default experiment; no name: a random readable one + tag.
    let run = create_run(&mut c, "", &[]).await;
    let i = info(&run);
    assert_eq!(i.experiment_id, "0");
    assert_eq!(i.run_id.len(), 32);
    assert!(i.run_id.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(
        i.artifact_uri,
        format!("mlflow-artifacts:/0/{}/artifacts", i.run_id)
    );
    assert_eq!(i.status, pb::RunStatus::Running as i32);
    assert_eq!(i.end_time, None);
    assert_eq!(i.lifecycle_stage, "active");
    assert!(!i.run_name.is_empty());
    assert_eq!(tag(&run, "mlflow.runName"), Some(i.run_name.as_str()));
    let run_id = i.run_id.clone();

    // Name from the tag; conflicting name and tag are refused.
    let named = create_run(&mut c, "0", &[("mlflow.runName", "from-tag")]).await;
    assert_eq!(info(&named).run_name, "from-tag");
    let err = c
        .create_run(pb::CreateRunRequest {
            run_name: "a".into(),
            tags: vec![pb::RunTag {
                key: "mlflow.runName".into(),
                value: "b".into(),
            }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = c
        .create_run(pb::CreateRunRequest {
            experiment_id: "42".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let given = c
        .create_run(pb::CreateRunRequest {
            run_name: "given".into(),
            user_id: "alice".into(),
            start_time: Some(1234),
            ..Default::default()
        })
        .await
        .answer()
        .run
        .unwrap();
    assert_eq!(info(&given).run_name, "given");
    assert_eq!(info(&given).user_id, "alice");
    assert_eq!(info(&given).start_time, 1234);
    assert_eq!(tag(&given, "mlflow.runName"), Some("given"));

    // Name and tag stay in sync both ways.
    set_tag(&mut c, &run_id, "mlflow.runName", "renamed-by-tag")
        .await
        .unwrap();
    assert_eq!(
        info(&get_run(&mut c, &run_id).await).run_name,
        "renamed-by-tag"
    );
    let updated = c
        .update_run(pb::UpdateRunRequest {
            run_id: run_id.clone(),
            status: Some(pb::RunStatus::Finished as i32),
            end_time: Some(99),
            run_name: Some("renamed-by-update".into()),
        })
        .await
        .answer()
        .run_info
        .unwrap();
    assert_eq!(updated.status, pb::RunStatus::Finished as i32);
    assert_eq!(updated.end_time, Some(99));
    let r = get_run(&mut c, &run_id).await;
    assert_eq!(info(&r).run_name, "renamed-by-update");
    assert_eq!(tag(&r, "mlflow.runName"), Some("renamed-by-update"));
    let err = c
        .update_run(pb::UpdateRunRequest {
            run_id: run_id.clone(),
            status: Some(17),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // Delete: readable, refuses writes, restorable.
    c.delete_run(pb::DeleteRunRequest {
        run_id: run_id.clone(),
        cascade: false,
    })
    .await
    .unwrap();
    assert_eq!(
        info(&get_run(&mut c, &run_id).await).lifecycle_stage,
        "deleted"
    );
    let err = c
        .log_metric(pb::LogMetricRequest {
            run_id: run_id.clone(),
            key: "m".into(),
            value: 1.0,
            timestamp: 1,
            step: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("must be in the 'active' state"),
        "{}",
        err.message()
    );
    let err = set_tag(&mut c, &run_id, "k", "v").await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    c.restore_run(pb::RestoreRunRequest {
        run_id: run_id.clone(),
        cascade: false,
    })
    .await
    .unwrap();
    set_tag(&mut c, &run_id, "k", "v").await.unwrap();

    let err = c
        .get_run(pb::GetRunRequest {
            run_id: "0123456789abcdef0123456789abcdef".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = c
        .get_run(pb::GetRunRequest {
            run_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    server.stop_and_check_rebuild().await;
}

/// A param never changes once logged: the same value again is fine, another value is refused, in a batch too.
#[tokio::test]
async fn params_never_change_once_logged() {
    let server = TestServer::start().await;
    let mut c = server.tracking().await;
    let run_id = info(&create_run(&mut c, "0", &[]).await).run_id.clone();
    let log_param = |v: &str| pb::LogParamRequest {
        run_id: run_id.clone(),
        key: "lr".into(),
        value: v.into(),
    };
    c.log_param(log_param("0.1")).await.unwrap();
    c.log_param(log_param("0.1")).await.unwrap();
    let err = c.log_param(log_param("0.2")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("Changing param values is not allowed. Param with key='lr' was already logged with value='0.1'"), "{}", err.message());
    let err = log_batch(&mut c, &run_id, vec![], vec![("lr", "0.3")], vec![])
        .await
        .unwrap_err();
    assert!(
        err.message().contains("Params were already logged"),
        "{}",
        err.message()
    );
    let err = log_batch(
        &mut c,
        &run_id,
        vec![],
        vec![("a", "1"), ("a", "2")],
        vec![],
    )
    .await
    .unwrap_err();
    assert!(
        err.message().contains("Duplicate parameter keys"),
        "{}",
        err.message()
    );
    server.stop_and_check_rebuild().await;
}

/// Over-long param and tag values are truncated to MLflow's limits; over-long or malformed keys are refused.
#[tokio::test]
async fn long_values_are_truncated_and_bad_keys_refused() {
    let server = TestServer::start().await;
    let mut c = server.tracking().await;
    let run_id = info(&create_run(&mut c, "0", &[]).await).run_id.clone();
    let long = "x".repeat(7000);
    let longer = "y".repeat(9000);
    log_batch(
        &mut c,
        &run_id,
        vec![],
        vec![("long", &long)],
        vec![("long", &longer)],
    )
    .await
    .unwrap();
    let r = get_run(&mut c, &run_id).await;
    let data = r.data.as_ref().unwrap();
    assert_eq!(
        data.params
            .iter()
            .find(|p| p.key == "long")
            .unwrap()
            .value
            .len(),
        6000
    );
    assert_eq!(tag(&r, "long").unwrap().len(), 8000);
    let long_key = "k".repeat(251);
    let err = log_batch(&mut c, &run_id, vec![], vec![(&long_key, "v")], vec![])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    for bad in ["a//b", "../up", "sp?ce", "/abs"] {
        let err = set_tag(&mut c, &run_id, bad, "v").await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad}");
        let err = log_batch(
            &mut c,
            &run_id,
            vec![metric(bad, 1.0, 1, 1)],
            vec![],
            vec![],
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad}");
    }
    server.stop_and_check_rebuild().await;
}

/// Tags can be set, overwritten and deleted; deleting a missing tag is NOT_FOUND.
#[tokio::test]
async fn tags_are_set_overwritten_and_deleted() {
    let server = TestServer::start().await;
    let mut c = server.tracking().await;
    let run_id = info(&create_run(&mut c, "0", &[]).await).run_id.clone();
    set_tag(&mut c, &run_id, "note", "a").await.unwrap();
    set_tag(&mut c, &run_id, "note", "b").await.unwrap();
    assert_eq!(tag(&get_run(&mut c, &run_id).await, "note"), Some("b"));
    c.delete_tag(pb::DeleteTagRequest {
        run_id: run_id.clone(),
        key: "note".into(),
    })
    .await
    .unwrap();
    assert_eq!(tag(&get_run(&mut c, &run_id).await, "note"), None);
    let err = c
        .delete_tag(pb::DeleteTagRequest {
            run_id: run_id.clone(),
            key: "note".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    server.stop_and_check_rebuild().await;
}

/// Metrics take NaN, ±Infinity and negative steps, and refuse negative timestamps.
#[tokio::test]
async fn metrics_take_nan_infinities_and_negative_steps() {
    let server = TestServer::start().await;
    let mut c = server.tracking().await;
    let run_id = info(&create_run(&mut c, "0", &[]).await).run_id.clone();
    log_batch(
        &mut c,
        &run_id,
        vec![
            metric("nan", f64::NAN, 1, 0),
            metric("inf", f64::INFINITY, 1, 0),
            metric("ninf", f64::NEG_INFINITY, 1, 0),
            metric("neg", 1.0, 1, -5),
        ],
        vec![],
        vec![],
    )
    .await
    .unwrap();
    let err = log_batch(
        &mut c,
        &run_id,
        vec![metric("t", 1.0, -1, 0)],
        vec![],
        vec![],
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("Timestamp must be a nonnegative"),
        "{}",
        err.message()
    );
    let r = get_run(&mut c, &run_id).await;
    let m = |k: &str| {
        r.data
            .as_ref()
            .unwrap()
            .metrics
            .iter()
            .find(|m| m.key == k)
            .cloned()
            .unwrap()
    };
    assert!(m("nan").value.is_nan());
    assert_eq!(m("inf").value, f64::INFINITY);
    assert_eq!(m("ninf").value, f64::NEG_INFINITY);
    assert_eq!(m("neg").step, -5);
    server.stop_and_check_rebuild().await;
}

/// Batches keep MLflow's limits, and a refused batch (even for its last entity) writes nothing.
#[tokio::test]
async fn batches_keep_mlflows_limits_and_write_all_or_nothing() {
    let server = TestServer::start().await;
    let mut c = server.tracking().await;
    let run_id = info(&create_run(&mut c, "0", &[]).await).run_id.clone();
    let many = |n: usize| {
        (0..n)
            .map(|i| metric("m", i as f64, 1, i as i64))
            .collect::<Vec<_>>()
    };
    let err = log_batch(&mut c, &run_id, many(1001), vec![], vec![])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("at most 1000 metrics"),
        "{}",
        err.message()
    );
    let params: Vec<(String, String)> = (0..101).map(|i| (format!("p{i}"), "v".into())).collect();
    let p: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let err = log_batch(&mut c, &run_id, vec![], p.clone(), vec![])
        .await
        .unwrap_err();
    assert!(
        err.message().contains("at most 100 params"),
        "{}",
        err.message()
    );
    let err = log_batch(&mut c, &run_id, vec![], vec![], p.clone())
        .await
        .unwrap_err();
    assert!(
        err.message().contains("at most 100 tags"),
        "{}",
        err.message()
    );
    let err = log_batch(&mut c, &run_id, many(901), p[..100].to_vec(), vec![])
        .await
        .unwrap_err();
    assert!(
        err.message().contains("at most 1000 total"),
        "{}",
        err.message()
    );
    // A batch whose last entity is bad writes none of it.
    let err = log_batch(
        &mut c,
        &run_id,
        vec![metric("fresh", 1.0, 1, 0)],
        vec![("newp", "v")],
        vec![("bad?", "v")],
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let r = get_run(&mut c, &run_id).await;
    let data = r.data.as_ref().unwrap();
    assert!(
        data.metrics
            .iter()
            .all(|m| m.key != "fresh" && m.key != "m")
    );
    assert!(data.params.iter().all(|p| p.key != "newp"));
    server.stop_and_check_rebuild().await;
}

/// The latest metric is MLflow's (max step, timestamp, value) and histories page in (timestamp, step) order.
#[tokio::test]
async fn latest_metric_and_history_paging() {
    let server = TestServer::start().await;
    let mut c = server.tracking().await;
    let run_id = info(&create_run(&mut c, "0", &[]).await).run_id.clone();

    // Latest = max by (step, timestamp, value), not the last logged.
    log_batch(
        &mut c,
        &run_id,
        vec![
            metric("loss", 5.0, 100, 3),
            metric("loss", 1.0, 200, 2),
            metric("loss", 7.0, 50, 3),
            metric("loss", 6.0, 100, 3),
        ],
        vec![],
        vec![],
    )
    .await
    .unwrap();
    let r = get_run(&mut c, &run_id).await;
    let latest = &r.data.as_ref().unwrap().metrics[0];
    assert_eq!((latest.value, latest.timestamp, latest.step), (6.0, 100, 3));

    // History is ordered by (timestamp, step, value) across batches, with a token that
    // disappears on the last page; an exact duplicate (a retried write) appears once.
    for chunk in 0..5 {
        let pts = (0..100)
            .map(|i| {
                let n = 1000 - (chunk * 100 + i);
                metric("h", n as f64, n as i64, (n % 7) as i64)
            })
            .collect();
        log_batch(&mut c, &run_id, pts, vec![], vec![])
            .await
            .unwrap();
    }
    log_batch(
        &mut c,
        &run_id,
        vec![metric("h", 1000.0, 1000, 1000 % 7)],
        vec![],
        vec![],
    )
    .await
    .unwrap();
    let (all, pages) = page_history(&mut c, &run_id, "h", 120, |_| async {}).await;
    assert_eq!(pages, 5);
    assert_eq!(all.len(), 500);
    assert!(all.windows(2).all(|w| w[0].timestamp < w[1].timestamp));
    assert_eq!(all[0].timestamp, 501);
    assert!(all.iter().all(|m| m.key == "h"));

    let whole = c
        .get_metric_history(pb::GetMetricHistoryRequest {
            run_id: run_id.clone(),
            metric_key: "h".into(),
            ..Default::default()
        })
        .await
        .answer();
    assert_eq!(whole.metrics.len(), 500);
    assert!(whole.next_page_token.is_empty());

    let err = c
        .get_metric_history(pb::GetMetricHistoryRequest {
            run_id: run_id.clone(),
            metric_key: "h".into(),
            page_token: "zzzz".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = c
        .get_metric_history(pb::GetMetricHistoryRequest {
            run_id: "missing".into(),
            metric_key: "h".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let none = c
        .get_metric_history(pb::GetMetricHistoryRequest {
            run_id: run_id.clone(),
            metric_key: "never-logged".into(),
            ..Default::default()
        })
        .await
        .answer();
    assert!(none.metrics.is_empty());
    server.stop_and_check_rebuild().await;
}

/// Pages through a history `size` points a page, calling `between(page number)` after
/// each page that has a next one; returns the points and the number of pages.
async fn page_history<F, Fut>(
    c: &mut Client,
    run_id: &str,
    key: &str,
    size: usize,
    mut between: F,
) -> (Vec<pb::Metric>, usize)
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut all = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = c
            .get_metric_history(pb::GetMetricHistoryRequest {
                run_id: run_id.into(),
                metric_key: key.into(),
                page_token: token.clone(),
                max_results: Some(i32::try_from(size).unwrap()),
            })
            .await
            .answer();
        pages += 1;
        assert!(page.metrics.len() <= size);
        all.extend(page.metrics);
        if page.next_page_token.is_empty() {
            return (all, pages);
        }
        token = page.next_page_token;
        between(pages).await;
    }
}

fn identity(m: &pb::Metric) -> (i64, i64, u64) {
    (m.timestamp, m.step, m.value.to_bits())
}

/// A history logged in order pages from where the last page ended: every page size gives
/// the whole history once, retried points once, NaN and equal timestamps in MLflow's
/// order; points appended while paging come at the end, and a point logged out of order
/// while paging does not make the pass repeat or skip what existed when it began.
#[tokio::test]
async fn in_order_histories_page_from_where_the_last_page_ended() {
    let server = TestServer::start().await;
    let mut c = server.tracking().await;
    let run_id = info(&create_run(&mut c, "0", &[]).await).run_id.clone();
    // Ten batches of 100 points; two points share each timestamp (steps 2t and 2t+1),
    // every 37th value is NaN, and each batch repeats the last point of the one before
    // (a retried write).
    let point = |i: i64| {
        let value = if i % 37 == 0 {
            f64::NAN
        } else {
            i as f64 / 8.0
        };
        metric("loss", value, 1_000 + i / 2, i)
    };
    for b in 0..10 {
        let mut pts: Vec<pb::Metric> = (b * 100..(b + 1) * 100).map(point).collect();
        if b > 0 {
            pts.insert(0, point(b * 100 - 1));
        }
        log_batch(&mut c, &run_id, pts, vec![], vec![])
            .await
            .unwrap();
    }
    let expected: Vec<_> = (0..1000).map(|i| identity(&point(i))).collect();
    let whole = c
        .get_metric_history(pb::GetMetricHistoryRequest {
            run_id: run_id.clone(),
            metric_key: "loss".into(),
            ..Default::default()
        })
        .await
        .answer();
    assert_eq!(
        whole.metrics.iter().map(identity).collect::<Vec<_>>(),
        expected
    );
    for size in [1, 7, 99, 100, 101, 333, 1000, 5000] {
        let (all, pages) = page_history(&mut c, &run_id, "loss", size, |_| async {}).await;
        assert_eq!(
            all.iter().map(identity).collect::<Vec<_>>(),
            expected,
            "pages of {size}"
        );
        assert_eq!(pages, 1000_usize.div_ceil(size).max(1), "pages of {size}");
    }

    // A token an older server issued when it paged histories by offset still pages,
    // and its next page continues with the new tokens.
    let offset_token: String = br#"{"offset":3}"#.iter().map(|b| format!("{b:02x}")).collect();
    let mut token = offset_token;
    for from in [3, 8] {
        let page = c
            .get_metric_history(pb::GetMetricHistoryRequest {
                run_id: run_id.clone(),
                metric_key: "loss".into(),
                page_token: token,
                max_results: Some(5),
            })
            .await
            .answer();
        let got: Vec<_> = page.metrics.iter().map(identity).collect();
        assert_eq!(got, expected[from..from + 5], "page from {from}");
        token = page.next_page_token;
    }

    // While a pass pages, in-order points are appended and then one is logged before
    // all the others.
    let writer = server.tracking().await;
    let (all, _) = page_history(&mut c, &run_id, "loss", 100, |page| {
        let mut w = writer.clone();
        let run_id = run_id.clone();
        async move {
            if page == 3 {
                let late = (1000..1050).map(point).collect();
                log_batch(&mut w, &run_id, late, vec![], vec![])
                    .await
                    .unwrap();
                let early = vec![metric("loss", 0.5, 1, 0)];
                log_batch(&mut w, &run_id, early, vec![], vec![])
                    .await
                    .unwrap();
            }
        }
    })
    .await;
    let appended: Vec<_> = (0..1050).map(|i| identity(&point(i))).collect();
    assert_eq!(all.iter().map(identity).collect::<Vec<_>>(), appended);
    // A new pass sees the early point first and pages the now out-of-order history.
    for size in [1, 64, 1051, 2000] {
        let (all, _) = page_history(&mut c, &run_id, "loss", size, |_| async {}).await;
        assert_eq!(all.len(), 1051, "pages of {size}");
        assert_eq!(identity(&all[0]), (1, 0, 0.5_f64.to_bits()));
        assert_eq!(all[1..].iter().map(identity).collect::<Vec<_>>(), appended);
    }

    // A search's token is not a history's.
    create_run(&mut c, "0", &[]).await;
    let search = c
        .search_runs(pb::SearchRunsRequest {
            experiment_ids: vec!["0".into()],
            max_results: Some(1),
            ..Default::default()
        })
        .await
        .answer();
    assert!(!search.next_page_token.is_empty());
    let err = c
        .get_metric_history(pb::GetMetricHistoryRequest {
            run_id: run_id.clone(),
            metric_key: "loss".into(),
            page_token: search.next_page_token,
            max_results: Some(10),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    server.stop_and_check_rebuild().await;
}

/// Parents, roots and depths follow mlflow.parentRunId; re-parenting moves subtrees and cycles are refused.
#[tokio::test]
async fn hierarchy_roots_depths_and_reparenting() {
    let server = TestServer::start().await;
    let mut c = server.tracking().await;
    let exp = create_experiment(&mut c, "tree").await;
    let root = info(&create_run(&mut c, &exp, &[]).await).clone();
    assert_eq!(root.root_run_id, root.run_id);
    assert_eq!(root.depth, 0);
    assert_eq!(root.parent_run_id, "");

    let child = create_run(&mut c, &exp, &[("mlflow.parentRunId", &root.run_id)]).await;
    let child_id = info(&child).run_id.clone();
    assert_eq!(info(&child).parent_run_id, root.run_id);
    assert_eq!(info(&child).root_run_id, root.run_id);
    assert_eq!(info(&child).depth, 1);
    assert_eq!(tag(&child, "mlflow.rootRunId"), Some(root.run_id.as_str()));
    let grandchild = create_run(&mut c, &exp, &[("mlflow.parentRunId", &child_id)]).await;
    let gc_id = info(&grandchild).run_id.clone();
    assert_eq!(info(&grandchild).depth, 2);
    assert_eq!(
        tag(&grandchild, "mlflow.rootRunId"),
        Some(root.run_id.as_str())
    );
    let root_run = get_run(&mut c, &root.run_id).await;
    assert_eq!(
        tag(&root_run, "mlflow.rootRunId"),
        Some(root.run_id.as_str()),
        "a root names itself"
    );

    // A parent that does not exist is accepted, as in MLflow: the tag stays as given and
    // the run is a root until such a run exists.
    let missing = "f".repeat(32);
    let orphan = common::new_run_id(
        &mut c,
        pb::CreateRunRequest {
            experiment_id: exp.clone(),
            tags: vec![pb::RunTag {
                key: "mlflow.parentRunId".into(),
                value: missing.clone(),
            }],
            ..Default::default()
        },
    )
    .await;
    let orphan = get_run(&mut c, &orphan).await;
    assert_eq!(tag(&orphan, "mlflow.parentRunId"), Some(missing.as_str()));
    assert_eq!(info(&orphan).parent_run_id, "");
    assert_eq!(info(&orphan).root_run_id, info(&orphan).run_id);
    assert_eq!(info(&orphan).depth, 0);
    // Refused parents: a cycle, self.
    // A parent in another experiment is accepted, as in MLflow: the tree spans both.
    let other = info(&create_run(&mut c, "0", &[]).await).run_id.clone();
    let adopted = common::new_run_id(
        &mut c,
        pb::CreateRunRequest {
            experiment_id: exp.clone(),
            tags: vec![pb::RunTag {
                key: "mlflow.parentRunId".into(),
                value: other.clone(),
            }],
            ..Default::default()
        },
    )
    .await;
    let adopted = get_run(&mut c, &adopted).await;
    assert_eq!(info(&adopted).root_run_id, other);
    assert_eq!(info(&adopted).experiment_id, exp);
    let err = set_tag(&mut c, &root.run_id, "mlflow.parentRunId", &gc_id)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("cycle"), "{}", err.message());
    let err = set_tag(&mut c, &child_id, "mlflow.parentRunId", &child_id)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = set_tag(&mut c, &child_id, "mlflow.rootRunId", "someone-else")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // Re-parent the child (with its grandchild) under a new root: the whole subtree moves.
    let new_root = info(&create_run(&mut c, &exp, &[]).await).run_id.clone();
    set_tag(&mut c, &child_id, "mlflow.parentRunId", &new_root)
        .await
        .unwrap();
    let moved = get_run(&mut c, &child_id).await;
    assert_eq!(info(&moved).parent_run_id, new_root);
    assert_eq!(info(&moved).root_run_id, new_root);
    assert_eq!(info(&moved).depth, 1);
    let moved_gc = get_run(&mut c, &gc_id).await;
    assert_eq!(info(&moved_gc).root_run_id, new_root);
    assert_eq!(info(&moved_gc).depth, 2);
    assert_eq!(tag(&moved_gc, "mlflow.rootRunId"), Some(new_root.as_str()));

    // Deleting the parent tag makes the child a root of its own subtree.
    c.delete_tag(pb::DeleteTagRequest {
        run_id: child_id.clone(),
        key: "mlflow.parentRunId".into(),
    })
    .await
    .unwrap();
    let detached = get_run(&mut c, &gc_id).await;
    assert_eq!(info(&detached).root_run_id, child_id);
    assert_eq!(info(&detached).depth, 1);
    assert_eq!(info(&get_run(&mut c, &child_id).await).depth, 0);

    // A parent set through LogBatch works the same way.
    log_batch(
        &mut c,
        &child_id,
        vec![],
        vec![],
        vec![("mlflow.parentRunId", &root.run_id)],
    )
    .await
    .unwrap();
    assert_eq!(
        info(&get_run(&mut c, &gc_id).await).root_run_id,
        root.run_id
    );
    assert_eq!(info(&get_run(&mut c, &gc_id).await).depth, 2);
    server.stop_and_check_rebuild().await;
}

/// SearchRuns orders by start time by default, honours the view type and pages to the end.
#[tokio::test]
async fn search_runs_default_order_view_and_paging() {
    let server = TestServer::start().await;
    let mut c = server.tracking().await;
    let exp = create_experiment(&mut c, "s").await;
    let mut ids = Vec::new();
    for t in [10, 30, 20, 30] {
        let r = c
            .create_run(pb::CreateRunRequest {
                experiment_id: exp.clone(),
                start_time: Some(t),
                ..Default::default()
            })
            .await
            .answer()
            .run
            .unwrap();
        ids.push((t, info(&r).run_id.clone()));
    }
    // start_time DESC, then run_id ASC.
    let mut expected = ids.clone();
    expected.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let expected: Vec<String> = expected.into_iter().map(|(_, id)| id).collect();

    let mut got = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .search_runs(pb::SearchRunsRequest {
                experiment_ids: vec![exp.clone()],
                max_results: Some(3),
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .answer();
        got.extend(page.runs.iter().map(|r| info(r).run_id.clone()));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(got, expected);

    c.delete_run(pb::DeleteRunRequest {
        run_id: expected[0].clone(),
        cascade: false,
    })
    .await
    .unwrap();
    let count = |view: pb::ViewType| pb::SearchRunsRequest {
        experiment_ids: vec![exp.clone(), "0".into()],
        run_view_type: view as i32,
        ..Default::default()
    };
    assert_eq!(
        c.search_runs(count(pb::ViewType::ActiveOnly))
            .await
            .answer()
            .runs
            .len(),
        3
    );
    assert_eq!(
        c.search_runs(count(pb::ViewType::DeletedOnly))
            .await
            .answer()
            .runs
            .len(),
        1
    );
    assert_eq!(
        c.search_runs(count(pb::ViewType::All))
            .await
            .answer()
            .runs
            .len(),
        4
    );
    let none = c
        .search_runs(pb::SearchRunsRequest::default())
        .await
        .answer();
    assert!(none.runs.is_empty(), "no experiment ids, no runs");
    let err = c
        .search_runs(pb::SearchRunsRequest {
            experiment_ids: vec![exp.clone()],
            max_results: Some(50_001),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    server.stop_and_check_rebuild().await;
}

/// Concurrent writers all succeed and every acknowledged write is stored.
#[tokio::test]
async fn concurrent_writers_share_group_commits() {
    let server = TestServer::start().await;
    let c = server.tracking().await;
    let run_id = info(&create_run(&mut c.clone(), "0", &[]).await)
        .run_id
        .clone();
    let mut tasks = Vec::new();
    for w in 0..8 {
        let mut c = c.clone();
        let run_id = run_id.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                c.log_metric(pb::LogMetricRequest {
                    run_id: run_id.clone(),
                    key: format!("w{w}"),
                    value: i as f64,
                    timestamp: i,
                    step: i,
                })
                .await
                .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut c = c;
    for w in 0..8 {
        let h = c
            .get_metric_history(pb::GetMetricHistoryRequest {
                run_id: run_id.clone(),
                metric_key: format!("w{w}"),
                ..Default::default()
            })
            .await
            .answer();
        assert_eq!(h.metrics.len(), 50);
    }
    server.stop_and_check_rebuild().await;
}
