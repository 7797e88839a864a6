//! A long random sequence of operations (valid and invalid) against the store, checked
//! against a small in-memory model, then against the log: rebuilding every projection
//! from the log must reproduce exactly what the committer wrote.

use std::collections::{BTreeMap, HashMap};

use arbor::domain::commands as c;
use arbor::domain::{BatchOrigin, Error, KeyValue, MetricPoint, RunStatus, ViewType};
use arbor::projection::RunRecord;
use arbor::store::{Store, StoreConfig};
use common::Choices;
use proptest::prelude::*;

use crate::common;

/// What the model expects of each run.
#[derive(Default, Clone)]
struct ModelRun {
    experiment: String,
    params: BTreeMap<String, String>,
    latest_step: HashMap<String, i64>,
}

const OPERATIONS: usize = 1500;

/// One of the writes the sequence is made of.
enum Op {
    CreateExperiment(c::CreateExperiment),
    RenameExperiment(c::RenameExperiment),
    DeleteExperiment(c::DeleteExperiment),
    RestoreExperiment(c::RestoreExperiment),
    SetExperimentTag(c::SetExperimentTag),
    CreateRun(c::CreateRun),
    UpdateRun(c::UpdateRun),
    DeleteRun(c::DeleteRun),
    RestoreRun(c::RestoreRun),
    GetOrCreateChildRun(c::GetOrCreateChildRun),
    LogBatch(c::LogBatch),
    DeleteTag(c::DeleteTag),
}

/// What an accepted write made that later writes may name.
enum Made {
    Experiment(String),
    Run(Box<RunRecord>),
    Nothing,
}

impl Op {
    async fn apply(self, store: &Store) -> Result<Made, Error> {
        let nothing = |()| Made::Nothing;
        match self {
            Op::CreateExperiment(w) => store.submit(w).await.map(Made::Experiment),
            Op::RenameExperiment(w) => store.submit(w).await.map(nothing),
            Op::DeleteExperiment(w) => store.submit(w).await.map(nothing),
            Op::RestoreExperiment(w) => store.submit(w).await.map(nothing),
            Op::SetExperimentTag(w) => store.submit(w).await.map(nothing),
            Op::CreateRun(w) => store.submit(w).await.map(|r| Made::Run(Box::new(r))),
            Op::UpdateRun(w) => store.submit(w).await.map(|_| Made::Nothing),
            Op::DeleteRun(w) => store.submit(w).await.map(nothing),
            Op::RestoreRun(w) => store.submit(w).await.map(nothing),
            Op::GetOrCreateChildRun(w) => store.submit(w).await.map(|(r, created)| {
                if created {
                    Made::Run(Box::new(r))
                } else {
                    Made::Nothing
                }
            }),
            Op::LogBatch(w) => store.submit(w).await.map(nothing),
            Op::DeleteTag(w) => store.submit(w).await.map(nothing),
        }
    }
}

proptest! {
    #![proptest_config(common::proptest_config(2))]

    /// Whatever sequence of valid and invalid writes the store takes, it agrees with the
    /// model, and rebuilding every projection from the log changes nothing.
    #[test]
    fn random_operations_rebuild_to_the_same_state(
        choices in proptest::collection::vec(any::<u64>(), 8 * OPERATIONS)
    ) {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(random_operations(Choices::new(choices)));
    }
}

async fn random_operations(mut rng: Choices) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
    let mut experiments: Vec<String> = vec!["0".into()];
    let mut runs: Vec<String> = Vec::new();
    let mut model: HashMap<String, ModelRun> = HashMap::new();
    let (mut accepted, mut refused) = (0, 0);

    for i in 0..OPERATIONS {
        let run = rng.pick(&runs).cloned();
        let exp = rng.pick(&experiments).cloned().unwrap();
        let command = match rng.below(15) {
            0 => Op::CreateExperiment(c::CreateExperiment {
                name: format!("e{}", rng.below(40)),
                artifact_location: String::new(),
                tags: vec![],
            }),
            1 => Op::RenameExperiment(c::RenameExperiment {
                experiment_id: exp.clone(),
                new_name: format!("e{}", rng.below(40)),
            }),
            2 => Op::DeleteExperiment(c::DeleteExperiment {
                experiment_id: exp.clone(),
            }),
            3 => Op::RestoreExperiment(c::RestoreExperiment {
                experiment_id: exp.clone(),
            }),
            4 => Op::SetExperimentTag(c::SetExperimentTag {
                experiment_id: exp.clone(),
                key: format!("t{}", rng.below(3)),
                value: i.to_string(),
            }),
            5 | 6 => {
                // A root, or a child of a random run (trees may span experiments, as in MLflow).
                let mut tags = vec![];
                if rng.below(3) > 0
                    && let Some(p) = &run
                {
                    tags.push(KeyValue::new("mlflow.parentRunId", p.clone()));
                }
                let exp = match (&run, rng.below(2)) {
                    (Some(r), 0) => model[r].experiment.clone(),
                    _ => exp.clone(),
                };
                Op::CreateRun(c::CreateRun {
                    experiment_id: exp,
                    user_id: "u".into(),
                    run_name: String::new(),
                    start_time: Some(i as i64),
                    tags,
                })
            }
            7 => Op::UpdateRun(c::UpdateRun {
                run_id: run.clone().unwrap_or_default(),
                status: Some(RunStatus::Finished),
                end_time: Some(i as i64),
                run_name: Some(format!("n{i}")),
            }),
            8 => Op::DeleteRun(c::DeleteRun {
                run_id: run.clone().unwrap_or_default(),
                cascade: rng.below(2) == 0,
            }),
            9 => Op::RestoreRun(c::RestoreRun {
                run_id: run.clone().unwrap_or_default(),
                cascade: rng.below(2) == 0,
            }),
            14 => Op::GetOrCreateChildRun(c::GetOrCreateChildRun {
                parent_run_id: run.clone().unwrap_or_default(),
                run_name: format!("child-{}", rng.below(3)),
                user_id: "u".into(),
                start_time: Some(i as i64),
                tags: vec![],
            }),
            10 | 11 => {
                let n = rng.below(20);
                let metrics = (0..n)
                    .map(|j| MetricPoint {
                        key: format!("m{}", j % 3),
                        value: rng.below(100) as f64,
                        timestamp: i as i64,
                        step: rng.below(50) as i64 - 10,
                    })
                    .collect();
                let params = (0..rng.below(3))
                    .map(|_| {
                        KeyValue::new(format!("p{}", rng.below(5)), format!("{}", rng.below(2)))
                    })
                    .collect();
                let tags = (0..rng.below(3))
                    .map(|_| KeyValue::new(format!("t{}", rng.below(5)), i.to_string()))
                    .collect();
                Op::LogBatch(c::LogBatch {
                    run_id: run.clone().unwrap_or_default(),
                    metrics,
                    params,
                    tags,
                    origin: BatchOrigin::Batch,
                    model_metrics: vec![],
                })
            }
            12 => {
                // Re-parent to a random run or to nothing; cycles are refused.
                let parent = if rng.below(4) == 0 {
                    String::new()
                } else {
                    rng.pick(&runs).cloned().unwrap_or_default()
                };
                Op::LogBatch(c::LogBatch {
                    run_id: run.clone().unwrap_or_default(),
                    metrics: vec![],
                    params: vec![],
                    tags: vec![KeyValue::new("mlflow.parentRunId", parent)],
                    origin: BatchOrigin::Single,
                    model_metrics: vec![],
                })
            }
            _ => Op::DeleteTag(c::DeleteTag {
                run_id: run.clone().unwrap_or_default(),
                key: format!("t{}", rng.below(5)),
            }),
        };
        let expected_params = if let Op::LogBatch(c::LogBatch { params, run_id, .. }) = &command {
            Some((run_id.clone(), params.clone()))
        } else {
            None
        };
        let metrics = if let Op::LogBatch(c::LogBatch {
            metrics, run_id, ..
        }) = &command
        {
            Some((run_id.clone(), metrics.clone()))
        } else {
            None
        };
        match command.apply(&store).await {
            Ok(made) => {
                accepted += 1;
                match made {
                    Made::Experiment(id) => experiments.push(id),
                    Made::Run(r) if !model.contains_key(&r.run_id) => {
                        model.insert(
                            r.run_id.clone(),
                            ModelRun {
                                experiment: r.experiment_id.to_string(),
                                ..Default::default()
                            },
                        );
                        runs.push(r.run_id.clone());
                    }
                    _ => {}
                }
                if let Some((run_id, params)) = expected_params {
                    let m = model.get_mut(&run_id).unwrap();
                    for p in params {
                        let old = m.params.entry(p.key.clone()).or_insert(p.value.clone());
                        assert_eq!(*old, p.value, "an accepted batch changed param {}", p.key);
                    }
                }
                if let Some((run_id, metrics)) = metrics {
                    let m = model.get_mut(&run_id).unwrap();
                    for p in metrics {
                        let s = m.latest_step.entry(p.key).or_insert(i64::MIN);
                        *s = (*s).max(p.step);
                    }
                }
            }
            Err(
                Error::NotFound(_)
                | Error::InvalidArgument(_)
                | Error::AlreadyExists(_)
                | Error::FailedPrecondition(_),
            ) => refused += 1,
            Err(e) => panic!("operation {i} failed unexpectedly: {e}"),
        }
    }
    assert!(
        accepted > OPERATIONS / 3 && refused > OPERATIONS / 20,
        "accepted {accepted}, refused {refused}"
    );

    // The model agrees with the store, and the hierarchy is consistent.
    for id in &runs {
        let r = store.get_run(id).unwrap();
        let m = &model[id];
        assert_eq!(r.params, m.params, "params of {id}");
        for (k, step) in &m.latest_step {
            assert_eq!(
                r.latest_metrics[k].step, *step,
                "latest step of {k} on {id}"
            );
        }
        let mut depth = 0;
        let mut top = r.clone();
        while !top.parent_run_id.is_empty() {
            top = store.get_run(&top.parent_run_id).unwrap();
            depth += 1;
            assert!(depth <= runs.len(), "cycle through {id}");
        }
        assert_eq!(r.root_run_id, top.run_id, "root of {id}");
        assert_eq!(r.depth as usize, depth, "depth of {id}");
        assert_eq!(r.tags.get("mlflow.rootRunId"), Some(&top.run_id));
        assert_eq!(
            r.tags
                .get("mlflow.parentRunId")
                .cloned()
                .unwrap_or_default(),
            r.parent_run_id
        );
    }
    let listed = store
        .search_runs(&experiments, ViewType::All, "", &[], Some(50_000), "")
        .unwrap()
        .0;
    assert_eq!(listed.len(), runs.len());

    store.close().await;
    drop(store);
    let report = arbor::store::rebuild(dir.path(), &StoreConfig::default()).unwrap();
    assert_eq!(report.keys_changed, 0, "{report:?}");
    assert_eq!(report.keys_before, report.keys_after);
}
