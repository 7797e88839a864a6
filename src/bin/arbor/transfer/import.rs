//! `arbor import`: copies experiments, runs (with their ids), histories, datasets,
//! artifact files and logged models from any MLflow-compatible server into Arbor,
//! writing only what Arbor lacks, so a second import, or one resumed after it was
//! interrupted, copies only the rest.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::{Value, json};

use super::{
    Options, SERVER_TAGS, Source, Summary, copy_artifacts, copy_run, each, enc, experiment_named,
    int, list, pairs, pairs_json, text,
};
use crate::http::Client;
use arbor::server::BoxError;
use arbor::store::{self, Store};

/// `arbor import`, or with `--verify` the comparison.
pub fn main(args: crate::config::ImportArgs) -> Result<(), arbor::server::BoxError> {
    use std::io::IsTerminal;
    use std::sync::atomic::Ordering::Relaxed;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let options = super::Options {
            experiments: args.experiments.clone(),
            jobs: args.jobs,
            progress: std::io::stderr().is_terminal(),
        };
        let from = crate::http::Client::new(&args.from, crate::http::mlflow_credentials())?
            .limit(args.source_connections);
        // A stopped store is served here, on loopback, for the length of the import:
        // one code path, through the API, for every store.
        let mut local = None;
        let target = match (&args.server, &args.data_dir) {
            (Some(url), _) => url.clone(),
            (None, Some(dir)) => {
                let store = Store::open(dir, &store::StoreConfig::default())
                    .map_err(|e| crate::serve::open_failure(dir, e))?;
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                let url = format!("http://{}", listener.local_addr()?);
                let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                let task = tokio::spawn(arbor::server::run(listener, store, async {
                    let _ = stopped.await;
                }));
                local = Some((stop, task));
                url
            }
            (None, None) => return Err("give --server URL or --data-dir DIR".into()),
        };
        let auth = if local.is_some() { None } else { crate::http::arbor_credentials() };
        let to = crate::http::Client::new(&target, auth)?;
        let outcome = if args.verify {
            let diffs = super::verify::verify(&from, &to, &options).await?;
            for d in &diffs {
                println!("{d}");
            }
            if diffs.is_empty() {
                println!("verified: the source and Arbor match");
                Ok(())
            } else {
                Err(format!("{} differences", diffs.len()).into())
            }
        } else {
            let started = std::time::Instant::now();
            let result = import(from, to, &options).await?;
            let s = result.summary();
            let secs = started.elapsed().as_secs_f64().max(1e-9);
            let (runs, points) = (s.runs.load(Relaxed), s.points.load(Relaxed));
            println!(
                "imported {} experiments, {runs} runs ({} new), {points} points, {} params and tags, {} logged models, {} artifact files ({} bytes) in {secs:.1} s: {:.0} runs/s, {:.0} points/s",
                s.experiments.load(Relaxed),
                s.runs_created.load(Relaxed),
                s.params_and_tags.load(Relaxed),
                s.logged_models.load(Relaxed),
                s.artifact_files.load(Relaxed),
                s.artifact_bytes.load(Relaxed),
                runs as f64 / secs,
                points as f64 / secs,
            );
            if let Ok(skipped) = s.skipped.lock() {
                for line in skipped.iter() {
                    println!("skipped: {line}");
                }
            }
            Ok(())
        };
        if let Some((stop, task)) = local {
            let _ = stop.send(());
            task.await??;
        }
        outcome
    })
}

/// Everything shared by the tasks of one import.
struct Import {
    from: Client,
    to: Client,
    summary: Summary,
    bars: Bars,
}

/// One progress bar per phase, on stderr when it is a terminal.
struct Bars {
    _multi: indicatif::MultiProgress,
    runs: indicatif::ProgressBar,
    points: indicatif::ProgressBar,
    artifacts: indicatif::ProgressBar,
}

impl Bars {
    fn new(show: bool) -> Bars {
        let multi = indicatif::MultiProgress::with_draw_target(if show {
            indicatif::ProgressDrawTarget::stderr()
        } else {
            indicatif::ProgressDrawTarget::hidden()
        });
        let style = |t: &str| {
            indicatif::ProgressStyle::with_template(t)
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        };
        let runs = multi.add(indicatif::ProgressBar::new(0));
        runs.set_style(style(
            "runs      {bar:30} {pos}/{len} ({per_sec}, {elapsed})",
        ));
        let points = multi.add(indicatif::ProgressBar::new_spinner());
        points.set_style(style("points    {pos} copied ({per_sec})"));
        let artifacts = multi.add(indicatif::ProgressBar::new_spinner());
        artifacts.set_style(style("artifacts {bytes} copied ({bytes_per_sec})"));
        Bars {
            _multi: multi,
            runs,
            points,
            artifacts,
        }
    }
}

impl Import {
    fn tick(&self) {
        self.bars
            .points
            .set_position(self.summary.points.load(Ordering::Relaxed));
        self.bars
            .artifacts
            .set_position(self.summary.artifact_bytes.load(Ordering::Relaxed));
    }

    /// The target's experiment for a source experiment, created or merged; its id.
    async fn experiment(&self, e: &Value) -> Result<String, BoxError> {
        let name = text(e, "name");
        let tags = pairs(e, "tags");
        let id = self
            .to
            .json(
                "POST",
                "/api/arbor/v1/import/experiment",
                Some(&json!({
                    "name": name,
                    "tags": pairs_json(&tags),
                    "creation_time": e.get("creation_time").and_then(int).unwrap_or(0),
                    "last_update_time": e.get("last_update_time").and_then(int).unwrap_or(0),
                })),
            )
            .await?;
        let id = text(&id, "experiment_id");
        let have = self
            .to
            .json(
                "GET",
                &format!("/api/2.0/mlflow/experiments/get?experiment_id={id}"),
                None,
            )
            .await?;
        let have_tags = pairs(&have["experiment"], "tags");
        if text(&have["experiment"], "lifecycle_stage") == "deleted" {
            self.to
                .json(
                    "POST",
                    "/api/2.0/mlflow/experiments/restore",
                    Some(&json!({"experiment_id": id})),
                )
                .await?;
        }
        for (k, v) in &tags {
            if have_tags.get(k) != Some(v) {
                self.to
                    .json(
                        "POST",
                        "/api/2.0/mlflow/experiments/set-experiment-tag",
                        Some(&json!({"experiment_id": id, "key": k, "value": v})),
                    )
                    .await?;
            }
        }
        Summary::add(&self.summary.experiments, 1);
        Ok(id)
    }

    /// One run: created with its id if missing, then whatever differs.
    async fn run(&self, r: &Value, experiment_id: &str) -> Result<(), BoxError> {
        let info = &r["info"];
        let mut tags = pairs(&r["data"], "tags");
        for t in SERVER_TAGS {
            tags.remove(t);
        }
        let answer = self
            .to
            .json(
                "POST",
                "/api/arbor/v1/import/run",
                Some(&json!({
                    "run_id": text(info, "run_id"),
                    "experiment_id": experiment_id,
                    "user_id": text(info, "user_id"),
                    "run_name": text(info, "run_name"),
                    "start_time": info.get("start_time").and_then(int),
                    "tags": pairs_json(&tags),
                })),
            )
            .await?;
        let created = answer.get("created").and_then(Value::as_bool) == Some(true);
        if created {
            Summary::add(&self.summary.runs_created, 1);
        }
        let tick = || self.tick();
        copy_run(
            &self.from,
            &self.to,
            r,
            &tags,
            &answer["run"],
            created,
            &self.summary,
            &tick,
        )
        .await
    }

    async fn post(&self, rpc: &str, body: Value) -> Result<Value, BoxError> {
        self.to
            .json("POST", &format!("/api/2.0/mlflow/{rpc}"), Some(&body))
            .await
    }

    /// A logged model, with its id, tags, status and files.
    async fn logged_model(&self, m: &Value, experiment_id: &str) -> Result<(), BoxError> {
        let info = &m["info"];
        let id = text(info, "model_id");
        let tags = pairs(info, "tags");
        let answer = self
            .to
            .json(
                "POST",
                "/api/arbor/v1/import/logged-model",
                Some(&json!({
                    "model_id": id,
                    "experiment_id": experiment_id,
                    "name": text(info, "name"),
                    "model_type": text(info, "model_type"),
                    "source_run_id": text(info, "source_run_id"),
                    "params": pairs_json(&pairs(&m["data"], "params")),
                    "tags": pairs_json(&tags),
                    "metrics": list(&m["data"], "metrics").cloned().collect::<Vec<_>>(),
                })),
            )
            .await?;
        let have = &answer["model"]["info"];
        let have_tags = pairs(have, "tags");
        let changed: BTreeMap<&String, &String> = tags
            .iter()
            .filter(|(k, v)| have_tags.get(*k) != Some(*v))
            .collect();
        if !changed.is_empty() {
            let tags: Vec<Value> = changed
                .iter()
                .map(|(k, v)| json!({"key": k, "value": v}))
                .collect();
            self.to
                .json(
                    "PATCH",
                    &format!("/api/2.0/mlflow/logged-models/{}/tags", enc(&id)),
                    Some(&json!({"tags": tags})),
                )
                .await?;
        }
        copy_artifacts(
            &self.from,
            &text(info, "artifact_uri"),
            None,
            &self.to,
            &text(have, "artifact_uri"),
            &self.summary,
        )
        .await?;
        let status = info.get("status").cloned().unwrap_or(Value::Null);
        if status != have.get("status").cloned().unwrap_or(Value::Null) && !status.is_null() {
            self.to
                .json(
                    "PATCH",
                    &format!("/api/2.0/mlflow/logged-models/{}", enc(&id)),
                    Some(&json!({"model_id": id, "status": status})),
                )
                .await?;
        }
        Summary::add(&self.summary.logged_models, 1);
        Ok(())
    }
}

/// Copies the chosen experiments of `from` (any MLflow-compatible server) into the
/// Arbor at `to`.
pub async fn import(
    from: Client,
    to: Client,
    options: &Options,
) -> Result<Arc<ImportResult>, BoxError> {
    let imp = Arc::new(Import {
        from,
        to,
        summary: Summary::default(),
        bars: Bars::new(options.progress),
    });
    let experiments = Source(&imp.from).experiments(&options.experiments).await?;
    let mut work = Vec::new();
    let mut deleted_experiments = Vec::new();
    for e in &experiments {
        let target = imp.experiment(e).await?;
        if text(e, "lifecycle_stage") == "deleted" {
            deleted_experiments.push(target.clone());
        }
        let runs = Source(&imp.from).runs(&text(e, "experiment_id")).await?;
        imp.bars.runs.inc_length(runs.len() as u64);
        work.extend(runs.into_iter().map(|r| (r, target.clone())));
    }
    let shared = imp.clone();
    each(work, options.jobs, move |(run, target)| {
        let imp = shared.clone();
        Box::pin(async move {
            let id = text(&run["info"], "run_id");
            imp.run(&run, &target)
                .await
                .map_err(|e| -> BoxError { format!("run {id}: {e}").into() })?;
            imp.bars.runs.inc(1);
            Ok(())
        })
    })
    .await?;
    for e in &experiments {
        let name = text(e, "name");
        let target = experiment_named(&imp.to, &name)
            .await?
            .ok_or_else(|| format!("experiment {name:?} vanished during the import"))?;
        let target = text(&target, "experiment_id");
        for m in Source(&imp.from)
            .logged_models(&text(e, "experiment_id"))
            .await?
        {
            imp.logged_model(&m, &target).await?;
        }
    }
    for id in deleted_experiments {
        imp.post("experiments/delete", json!({"experiment_id": id}))
            .await?;
    }
    imp.bars.runs.finish();
    imp.bars.points.finish();
    imp.bars.artifacts.finish();
    Ok(Arc::new(ImportResult(imp)))
}

/// The summary of a finished import.
pub struct ImportResult(Arc<Import>);

impl ImportResult {
    pub fn summary(&self) -> &Summary {
        &self.0.summary
    }
}
