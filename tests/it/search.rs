//! SearchRuns and SearchExperiments with MLflow's filter language, order_by and paging:
//! every filter form of the reference with its expected result set, in order.

use crate::common;
use common::Answer;

use arbor::pb::{self, tracking_service_client::TrackingServiceClient};
use common::TestServer;
use tonic::Code;
use tonic::transport::Channel;

type Client = TrackingServiceClient<Channel>;

struct Fixture {
    c: Client,
    e1: String,
    e2: String,
    ids: std::collections::HashMap<String, String>,
}

struct RunSpec<'a> {
    name: &'a str,
    exp: &'a str,
    start: i64,
    user: &'a str,
    parent: Option<&'a str>,
    params: &'a [(&'a str, &'a str)],
    tags: &'a [(&'a str, &'a str)],
    metrics: &'a [(&'a str, f64)],
    end: Option<(pb::RunStatus, i64)>,
}

impl Fixture {
    async fn run(&mut self, s: RunSpec<'_>) {
        let mut tags: Vec<pb::RunTag> = s
            .tags
            .iter()
            .map(|(k, v)| pb::RunTag {
                key: k.to_string(),
                value: v.to_string(),
            })
            .collect();
        if let Some(p) = s.parent {
            tags.push(pb::RunTag {
                key: "mlflow.parentRunId".into(),
                value: self.ids[p].clone(),
            });
        }
        let exp = if s.exp == "e1" {
            self.e1.clone()
        } else {
            self.e2.clone()
        };
        let run = self
            .c
            .create_run(pb::CreateRunRequest {
                experiment_id: exp,
                user_id: s.user.into(),
                run_name: s.name.into(),
                start_time: Some(s.start),
                tags,
            })
            .await
            .answer()
            .run
            .unwrap();
        let id = run.info.unwrap().run_id;
        self.c
            .log_batch(pb::LogBatchRequest {
                run_id: id.clone(),
                metrics: s
                    .metrics
                    .iter()
                    .map(|(k, v)| pb::Metric {
                        key: k.to_string(),
                        value: *v,
                        timestamp: 1,
                        step: 0,
                    })
                    .collect(),
                params: s
                    .params
                    .iter()
                    .map(|(k, v)| pb::Param {
                        key: k.to_string(),
                        value: v.to_string(),
                    })
                    .collect(),
                tags: vec![],
            })
            .await
            .unwrap();
        if let Some((status, end)) = s.end {
            self.c
                .update_run(pb::UpdateRunRequest {
                    run_id: id.clone(),
                    status: Some(status as i32),
                    end_time: Some(end),
                    run_name: None,
                })
                .await
                .unwrap();
        }
        self.ids.insert(s.name.to_string(), id);
    }

    async fn search(
        &mut self,
        exps: &[&str],
        view: pb::ViewType,
        filter: &str,
        order_by: &[&str],
    ) -> Result<Vec<String>, tonic::Status> {
        let mut names = Vec::new();
        let mut token = String::new();
        loop {
            let page = self
                .c
                .search_runs(pb::SearchRunsRequest {
                    experiment_ids: exps
                        .iter()
                        .map(|e| {
                            if *e == "e1" {
                                self.e1.clone()
                            } else {
                                self.e2.clone()
                            }
                        })
                        .collect(),
                    filter: filter.into(),
                    run_view_type: view as i32,
                    max_results: Some(2),
                    order_by: order_by.iter().map(|s| s.to_string()).collect(),
                    page_token: token,
                })
                .await?
                .into_inner();
            assert!(page.runs.len() <= 2);
            names.extend(page.runs.into_iter().map(|r| r.info.unwrap().run_name));
            if page.next_page_token.is_empty() {
                return Ok(names);
            }
            token = page.next_page_token;
        }
    }

    /// Runs of e1, active, default order, matching `filter`.
    async fn names(&mut self, filter: &str) -> Vec<String> {
        self.search(&["e1"], pb::ViewType::ActiveOnly, filter, &[])
            .await
            .unwrap_or_else(|e| panic!("{filter}: {e}"))
    }

    fn id(&self, name: &str) -> &str {
        &self.ids[name]
    }
}

async fn fixture(server: &TestServer) -> Fixture {
    let mut c = server.client().await;
    let exp = |name: &'static str| {
        let mut c = c.clone();
        async move {
            c.create_experiment(pb::CreateExperimentRequest {
                name: name.into(),
                ..Default::default()
            })
            .await
            .answer()
            .experiment_id
        }
    };
    let (e1, e2) = (exp("e1").await, exp("e2").await);
    let mut f = Fixture {
        c: c.clone(),
        e1,
        e2,
        ids: Default::default(),
    };
    let spec = |name, start, user| RunSpec {
        name,
        exp: "e1",
        start,
        user,
        parent: None,
        params: &[],
        tags: &[],
        metrics: &[],
        end: None,
    };
    f.run(RunSpec {
        params: &[("lr", "0.01"), ("batch", "32")],
        tags: &[("team", "vision"), ("a.b", "x")],
        metrics: &[("loss", 0.3), ("acc", 0.9)],
        end: Some((pb::RunStatus::Finished, 1500)),
        ..spec("alpha", 1000, "alice")
    })
    .await;
    f.run(RunSpec {
        parent: Some("alpha"),
        params: &[("lr", "0.1")],
        tags: &[("team", "nlp")],
        metrics: &[("loss", 0.7), ("acc", f64::NAN)],
        ..spec("beta-child_1", 2000, "bob")
    })
    .await;
    f.run(RunSpec {
        parent: Some("beta-child_1"),
        params: &[("lr", "0.01")],
        tags: &[("my tag", "spaced")],
        metrics: &[("my metric", 5.0)],
        end: Some((pb::RunStatus::Failed, 3500)),
        ..spec("gamma-child_10", 3000, "alice")
    })
    .await;
    f.run(RunSpec {
        metrics: &[("loss", f64::NAN)],
        ..spec("Delta", 4000, "carol")
    })
    .await;
    f.run(RunSpec {
        params: &[("lr", "0.01")],
        ..spec("deleted-one", 5000, "dave")
    })
    .await;
    f.run(RunSpec {
        exp: "e2",
        params: &[("lr", "0.01")],
        metrics: &[("loss", 0.1)],
        ..spec("foreign", 500, "erin")
    })
    .await;
    let deleted = f.id("deleted-one").to_string();
    c.delete_run(pb::DeleteRunRequest {
        run_id: deleted,
        cascade: false,
    })
    .await
    .unwrap();
    f
}

fn v(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

const A: &str = "alpha";
const B: &str = "beta-child_1";
const C: &str = "gamma-child_10";
const D: &str = "Delta";

/// Every filter form of MLflow's grammar returns exactly MLflow's runs, in order.
#[tokio::test]
async fn every_filter_form_gives_mlflows_result_set() {
    let server = TestServer::start().await;
    let mut f = fixture(&server).await;
    let cases: Vec<(String, Vec<String>)> = vec![
        ("".into(), v(&[D, C, B, A])),
        // params, with every entity alias and both quote styles
        ("params.lr = '0.01'".into(), v(&[C, A])),
        ("param.lr = \"0.01\"".into(), v(&[C, A])),
        ("parameter.lr = '0.1'".into(), v(&[B])),
        ("parameters.lr = '0.1'".into(), v(&[B])),
        ("params.lr != '0.01'".into(), v(&[B])),
        ("params.lr LIKE '0.0%'".into(), v(&[C, A])),
        ("params.lr like '0.0_'".into(), v(&[C, A])),
        ("params.lr ILIKE '0.1'".into(), v(&[B])),
        ("params.batch IS NULL".into(), v(&[D, C, B])),
        ("params.batch IS NOT NULL".into(), v(&[A])),
        ("`params`.lr = '0.1'".into(), v(&[B])),
        // metrics: the latest value; NaN matches only != (IEEE), as mlflow server answers
        ("metrics.loss < 0.5".into(), v(&[A])),
        ("metrics.loss <= 0.3".into(), v(&[A])),
        ("metrics.loss > 0.3".into(), v(&[B])),
        ("metrics.loss >= 0.3".into(), v(&[B, A])),
        ("metrics.loss = 0.7".into(), v(&[B])),
        ("metrics.loss != 0.3".into(), v(&[D, B])),
        ("metric.acc > 0.5".into(), v(&[A])),
        ("metrics.loss = 0".into(), v(&[])),
        ("metrics.`my metric` = 5".into(), v(&[C])),
        ("metrics.\"my metric\" >= 4.5e0".into(), v(&[C])),
        ("metrics.loss > -1".into(), v(&[B, A])),
        // tags, including dotted, quoted and backticked keys
        ("tags.team = 'vision'".into(), v(&[A])),
        ("tag.team != 'vision'".into(), v(&[B])),
        ("tags.team LIKE 'v%'".into(), v(&[A])),
        ("tags.team LIKE 'V%'".into(), v(&[])),
        ("tags.team ILIKE 'V%'".into(), v(&[A])),
        ("tags.team IS NULL".into(), v(&[D, C])),
        ("tags.team IS NOT NULL".into(), v(&[B, A])),
        ("tags.`a.b` = 'x'".into(), v(&[A])),
        ("tags.\"a.b\" = 'x'".into(), v(&[A])),
        ("tags.'a.b' = 'x'".into(), v(&[A])),
        ("tags.\"my tag\" = 'spaced'".into(), v(&[C])),
        ("tags.mlflow.runName = 'alpha'".into(), v(&[A])),
        ("tags.mlflow.runName ILIKE '%CHILD_1%'".into(), v(&[C, B])),
        (
            format!("tags.mlflow.rootRunId = '{}'", f.id(A)),
            v(&[C, B, A]),
        ),
        (format!("tags.mlflow.parentRunId = '{}'", f.id(A)), v(&[B])),
        (format!("tags.mlflow.parentRunId = '{}'", f.id(B)), v(&[C])),
        // attributes, with aliases
        (format!("attributes.run_id = '{}'", f.id(B)), v(&[B])),
        (
            format!("run_id IN ('{}', '{}')", f.id(A), f.id(C)),
            v(&[C, A]),
        ),
        (format!("attr.run_id NOT IN ('{}')", f.id(A)), v(&[D, C, B])),
        (format!("run.run_id != '{}'", f.id(A)), v(&[D, C, B])),
        ("attributes.run_name = 'alpha'".into(), v(&[A])),
        ("attributes.run_name = 'alph'".into(), v(&[])),
        ("tags.mlflow.runName = 'alphaa'".into(), v(&[])),
        ("run_name LIKE '%child%'".into(), v(&[C, B])),
        ("attributes.`Run name` = 'Delta'".into(), v(&[D])),
        ("attributes.\"run name\" ILIKE 'delta'".into(), v(&[D])),
        ("attributes.status = 'FINISHED'".into(), v(&[A])),
        ("status != 'RUNNING'".into(), v(&[C, A])),
        ("attributes.user_id = 'alice'".into(), v(&[C, A])),
        (
            "attributes.artifact_uri LIKE '%/artifacts'".into(),
            v(&[D, C, B, A]),
        ),
        ("attributes.start_time > 2500".into(), v(&[D, C])),
        ("created >= 2000".into(), v(&[D, C, B])),
        ("Created < 2000".into(), v(&[A])),
        ("attributes.end_time < 3000".into(), v(&[A])),
        ("attributes.end_time != 0".into(), v(&[C, A])),
        // datasets: no run has inputs
        ("datasets.name = 'train'".into(), v(&[])),
        ("dataset.digest IN ('abc')".into(), v(&[])),
        // conjunctions, keywords in any case
        ("params.lr = '0.01' AND metrics.loss < 0.5".into(), v(&[A])),
        ("params.lr = '0.01' and tags.team IS NULL".into(), v(&[C])),
        (
            "params.lr = '0.01' And attributes.user_id = 'alice' AND tags.team = 'vision'".into(),
            v(&[A]),
        ),
        (
            format!(
                "tags.mlflow.rootRunId = '{}' AND metrics.loss > 0.5",
                f.id(A)
            ),
            v(&[B]),
        ),
    ];
    for (filter, expected) in cases {
        assert_eq!(f.names(&filter).await, expected, "filter {filter:?}");
    }

    // View types and several experiments.
    assert_eq!(
        f.search(&["e1"], pb::ViewType::All, "params.lr = '0.01'", &[])
            .await
            .unwrap(),
        v(&["deleted-one", C, A])
    );
    assert_eq!(
        f.search(&["e1"], pb::ViewType::DeletedOnly, "", &[])
            .await
            .unwrap(),
        v(&["deleted-one"])
    );
    assert_eq!(
        f.search(
            &["e1", "e2"],
            pb::ViewType::ActiveOnly,
            "params.lr = '0.01'",
            &[]
        )
        .await
        .unwrap(),
        v(&[C, A, "foreign"])
    );
    assert_eq!(
        f.search(&["e1", "e2"], pb::ViewType::ActiveOnly, "", &[])
            .await
            .unwrap(),
        v(&[D, C, B, A, "foreign"])
    );
    server.stop_and_check_rebuild().await;
}

/// order_by keys sort in both directions with NaN and missing values where MLflow puts them.
#[tokio::test]
async fn order_by_keys_directions_and_null_placement() {
    let server = TestServer::start().await;
    let mut f = fixture(&server).await;
    let cases: Vec<(Vec<&str>, Vec<String>)> = vec![
        // numbers, then NaN, then missing, in both directions
        (vec!["metrics.loss ASC"], v(&[A, B, D, C])),
        (vec!["metrics.loss DESC"], v(&[B, A, D, C])),
        (vec!["metrics.loss"], v(&[A, B, D, C])),
        (vec!["params.lr DESC"], v(&[B, C, A, D])),
        (vec!["params.lr ASC", "start_time ASC"], v(&[A, C, B, D])),
        (
            vec!["param.lr asc", "attributes.start_time asc"],
            v(&[A, C, B, D]),
        ),
        (vec!["attributes.run_name"], v(&[D, A, B, C])),
        (vec!["tags.team ASC"], v(&[B, A, D, C])),
        (vec!["attributes.end_time DESC"], v(&[C, A, D, B])),
        (vec!["start_time ASC"], v(&[A, B, C, D])),
        (vec!["created DESC"], v(&[D, C, B, A])),
        (
            vec!["attributes.status", "metrics.`my metric` DESC"],
            v(&[C, A, D, B]),
        ),
    ];
    for (order, expected) in cases {
        let got = f
            .search(&["e1"], pb::ViewType::ActiveOnly, "", &order)
            .await
            .unwrap();
        assert_eq!(got, expected, "order_by {order:?}");
    }
    let got = f
        .search(
            &["e1"],
            pb::ViewType::ActiveOnly,
            "params.lr = '0.01'",
            &["metrics.loss DESC"],
        )
        .await
        .unwrap();
    assert_eq!(got, v(&[A, C]));
    // Ordered by a metric the filter requires: answered from the metric value index.
    type Case<'a> = (&'a [&'a str], &'a str, Vec<&'a str>, Vec<String>);
    let indexed: Vec<Case> = vec![
        (
            &["e1"],
            "metrics.loss < 0.8",
            vec!["metrics.loss ASC"],
            v(&[A, B]),
        ),
        (
            &["e1"],
            "metrics.loss < 0.8",
            vec!["metrics.loss DESC"],
            v(&[B, A]),
        ),
        (&["e1"], "metrics.loss > 0.5", vec!["metrics.loss"], v(&[B])),
        (
            &["e1", "e2"],
            "metrics.loss < 0.8",
            vec!["metrics.loss ASC"],
            v(&["foreign", A, B]),
        ),
        (
            &["e1", "e2"],
            "params.lr = '0.01' and metrics.loss < 0.5",
            vec!["metrics.loss ASC"],
            v(&["foreign", A]),
        ),
        (
            &["e1", "e2"],
            "metrics.loss != 0.2",
            vec!["metrics.loss DESC", "params.lr"],
            v(&[B, A, "foreign", D]),
        ),
    ];
    for (exps, filter, order, expected) in indexed {
        let got = f
            .search(exps, pb::ViewType::ActiveOnly, filter, &order)
            .await
            .unwrap();
        assert_eq!(got, expected, "{filter} order_by {order:?}");
    }
    server.stop().await;
}

/// Malformed filters and order_bys are refused with INVALID_ARGUMENT naming the position.
#[tokio::test]
async fn malformed_filters_are_refused_with_a_position() {
    let server = TestServer::start().await;
    let mut f = fixture(&server).await;
    let bad_filters = [
        ("params.lr = '0.01' OR params.lr = '0.1'", "OR"),
        ("(params.lr = '0.01')", "parentheses"),
        ("foo.lr = '1'", "invalid entity"),
        ("metrics.loss LIKE '0.5'", "not allowed"),
        ("params.lr < '1'", "not allowed"),
        ("status IN ('RUNNING')", "only the run_id attribute"),
        ("metrics.loss IS NULL", "not allowed"),
        ("params.lr = 0.01", "quoted string"),
        ("params.lr = unquoted", "not quoted"),
        (
            "attributes.lifecycle_stage = 'active'",
            "invalid attribute key",
        ),
        ("metrics.loss < 'abc'", "expected a number"),
        ("params.lr =", "expected a value"),
        ("params.lr = 'a", "unterminated"),
        ("params.lr = 'a' AND", "expected an identifier"),
        ("params.lr 'a'", "expected a comparator"),
        ("params.lr = 'a' params.x = 'b'", "expected AND"),
        ("run_id IN 'a'", "expected '('"),
        ("run_id IN ('a' 'b')", "expected ',' or ')'"),
        ("params. = 'a'", "key"),
        ("datasets.size = 'a'", "invalid dataset key"),
        ("params.lr = 'a' ; DROP TABLE runs", "unexpected character"),
    ];
    for (filter, why) in bad_filters {
        let err = f
            .search(&["e1"], pb::ViewType::ActiveOnly, filter, &[])
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{filter}");
        assert!(err.message().contains(why), "{filter}: {}", err.message());
        assert!(
            err.message().contains("position") || why == "OR" || why == "parentheses",
            "{filter}: {}",
            err.message()
        );
    }
    for order in [
        vec!["metrics.loss UP"],
        vec!["metrics.loss", "metrics.loss DESC"],
        vec!["datasets.name"],
        vec![""],
        vec!["attributes.nope"],
    ] {
        let err = f
            .search(&["e1"], pb::ViewType::ActiveOnly, "", &order)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{order:?}");
    }
    // A token from one query shape is refused by another.
    let page =
        f.c.search_runs(pb::SearchRunsRequest {
            experiment_ids: vec![f.e1.clone()],
            max_results: Some(1),
            ..Default::default()
        })
        .await
        .answer();
    let err =
        f.c.search_runs(pb::SearchRunsRequest {
            experiment_ids: vec![f.e1.clone()],
            order_by: vec!["metrics.loss".into()],
            page_token: page.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    server.stop().await;
}

/// SearchExperiments takes its own filter grammar and orderings, as MLflow.
#[tokio::test]
async fn search_experiments_filters_and_orders() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    for (name, tag) in [("alpha-exp", Some("me")), ("beta-exp", None)] {
        c.create_experiment(pb::CreateExperimentRequest {
            name: name.into(),
            tags: tag
                .map(|t| pb::ExperimentTag {
                    key: "owner".into(),
                    value: t.into(),
                })
                .into_iter()
                .collect(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let mut search = async |filter: &str, order: &[&str]| -> Result<Vec<String>, tonic::Status> {
        Ok(c.search_experiments(pb::SearchExperimentsRequest {
            filter: filter.into(),
            order_by: order.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .experiments
        .into_iter()
        .map(|e| e.name)
        .collect())
    };
    assert_eq!(
        search("name = 'alpha-exp'", &[]).await.unwrap(),
        v(&["alpha-exp"])
    );
    assert_eq!(
        search("attribute.name LIKE '%-exp'", &["name DESC"])
            .await
            .unwrap(),
        v(&["beta-exp", "alpha-exp"])
    );
    assert_eq!(
        search("name ILIKE 'ALPHA%'", &[]).await.unwrap(),
        v(&["alpha-exp"])
    );
    assert_eq!(
        search("tags.owner = 'me'", &[]).await.unwrap(),
        v(&["alpha-exp"])
    );
    assert_eq!(
        search("tags.owner IS NULL", &["name ASC"]).await.unwrap(),
        v(&["Default", "beta-exp"])
    );
    assert_eq!(
        search("experiment_id IN ('0', '2')", &["experiment_id DESC"])
            .await
            .unwrap(),
        v(&["beta-exp", "Default"])
    );
    assert_eq!(
        search("experiment_id != '0'", &["name"]).await.unwrap(),
        v(&["alpha-exp", "beta-exp"])
    );
    assert_eq!(
        search("creation_time >= 0", &["name ASC"]).await.unwrap(),
        v(&["Default", "alpha-exp", "beta-exp"])
    );
    assert_eq!(
        search("", &["last_update_time DESC", "name ASC"])
            .await
            .unwrap()
            .len(),
        3
    );
    for bad in [
        "attributes.name = 'x'",
        "metrics.x > 1",
        "name IN ('a')",
        "experiment_id LIKE '1'",
        "nope = 'x'",
    ] {
        let err = search(bad, &[]).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad}");
    }
    assert_eq!(
        search("", &["name", "name DESC"]).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    server.stop().await;
}

/// Ordering by a metric keeps ties in MLflow's order whatever the page size.
#[tokio::test]
async fn metric_order_keeps_ties_in_mlflows_order_across_pages() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let mut expected = Vec::new();
    for (i, loss) in [0.5, 0.2, 0.5, 0.5, 0.9, 0.5, 0.2].into_iter().enumerate() {
        let run = common::new_run_id(
            &mut c,
            pb::CreateRunRequest {
                run_name: format!("r{i}"),
                start_time: Some(i as i64),
                ..Default::default()
            },
        )
        .await;
        c.log_metric(pb::LogMetricRequest {
            run_id: run,
            key: "loss".into(),
            value: loss,
            timestamp: 1,
            step: 1,
        })
        .await
        .unwrap();
        expected.push((loss, i));
    }
    // loss ASC, then start_time DESC.
    expected.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)));
    let expected: Vec<String> = expected.into_iter().map(|(_, i)| format!("r{i}")).collect();
    for page_size in [1, 2, 3, 4] {
        let mut got = Vec::new();
        let mut token = String::new();
        loop {
            let page = c
                .search_runs(pb::SearchRunsRequest {
                    experiment_ids: vec!["0".into()],
                    filter: "metrics.loss >= 0".into(),
                    order_by: vec!["metrics.loss ASC".into()],
                    max_results: Some(page_size),
                    page_token: token,
                    ..Default::default()
                })
                .await
                .answer();
            got.extend(page.runs.into_iter().map(|r| r.info.unwrap().run_name));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(got, expected, "page size {page_size}");
    }
    server.stop_and_check_rebuild().await;
}

/// Run-name filters match the current name after a rename.
#[tokio::test]
async fn name_filters_follow_renames() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let id = common::new_run_id(
        &mut c,
        pb::CreateRunRequest {
            run_name: "before".into(),
            ..Default::default()
        },
    )
    .await;
    let mut names = async |filter: &str| -> Vec<String> {
        c.search_runs(pb::SearchRunsRequest {
            experiment_ids: vec!["0".into()],
            filter: filter.into(),
            ..Default::default()
        })
        .await
        .answer()
        .runs
        .into_iter()
        .map(|r| r.info.unwrap().run_name)
        .collect()
    };
    assert_eq!(
        names("attributes.run_name = 'before'").await,
        vec!["before"]
    );
    let mut c2 = server.client().await;
    c2.set_tag(pb::SetTagRequest {
        run_id: id.clone(),
        key: "mlflow.runName".into(),
        value: "middle".into(),
    })
    .await
    .unwrap();
    assert!(names("tags.mlflow.runName = 'before'").await.is_empty());
    assert_eq!(
        names("tags.mlflow.runName LIKE 'mid%'").await,
        vec!["middle"]
    );
    c2.update_run(pb::UpdateRunRequest {
        run_id: id,
        run_name: Some("after".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(names("run_name ILIKE '%MIDDLE%'").await.is_empty());
    assert_eq!(names("run_name ILIKE '%AFTER%'").await, vec!["after"]);
    server.stop_and_check_rebuild().await;
}

/// Name and param filters that match more runs than a page holds page through the
/// start-time index; every page size gives the same runs in the same order as one page,
/// including across two experiments and with runs started at the same time.
#[tokio::test]
async fn name_and_param_filters_page_in_the_default_order() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let e1 = common::create_experiment(&mut c, "paged-1").await;
    let e2 = common::create_experiment(&mut c, "paged-2").await;
    for i in 0..40i64 {
        let exp = if i % 3 == 0 { &e2 } else { &e1 };
        let id = common::new_run_id(
            &mut c,
            pb::CreateRunRequest {
                experiment_id: exp.clone(),
                run_name: format!("{}-{i}", if i % 2 == 0 { "child" } else { "other" }),
                // Pairs of runs share a start time: ties are broken by run id.
                start_time: Some(1_000 + i / 2),
                ..Default::default()
            },
        )
        .await;
        c.log_param(pb::LogParamRequest {
            run_id: id,
            key: "lr".into(),
            value: if i % 4 == 0 { "0.1" } else { "0.01" }.into(),
        })
        .await
        .unwrap();
    }
    async fn all(c: &mut Client, exps: &[&String], filter: &str, page: i32) -> Vec<String> {
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let r = c
                .search_runs(pb::SearchRunsRequest {
                    experiment_ids: exps.iter().map(|e| e.to_string()).collect(),
                    filter: filter.into(),
                    max_results: Some(page),
                    page_token: token.clone(),
                    ..Default::default()
                })
                .await
                .answer();
            assert!(r.runs.len() <= usize::try_from(page).unwrap());
            out.extend(r.runs.into_iter().map(|r| r.info.unwrap().run_name));
            if r.next_page_token.is_empty() {
                return out;
            }
            token = r.next_page_token;
        }
    }
    for filter in [
        "attributes.run_name LIKE 'child%'",
        "tags.mlflow.runName ILIKE '%HILD-1%'",
        "params.lr = '0.01'",
        "params.lr = '0.01' and attributes.run_name LIKE '%-3%'",
    ] {
        let whole = all(&mut c, &[&e1, &e2], filter, 1000).await;
        assert!(!whole.is_empty(), "{filter}");
        for page in [1, 3, 7, 50] {
            assert_eq!(
                all(&mut c, &[&e1, &e2], filter, page).await,
                whole,
                "{filter}, pages of {page}"
            );
        }
        let one = all(&mut c, &[&e1], filter, 1000).await;
        assert_eq!(
            all(&mut c, &[&e1], filter, 2).await,
            one,
            "{filter}, one experiment"
        );
    }
    // Newest first, as MLflow: the default order.
    let whole = all(
        &mut c,
        &[&e1, &e2],
        "attributes.run_name LIKE 'child%'",
        1000,
    )
    .await;
    assert_eq!(whole.len(), 20);
    assert!(whole[0] == "child-38", "{whole:?}");
    server.stop().await;
}
