//! `arbor export`: replays experiments from Arbor (or any MLflow-compatible server) into
//! a server that makes its own run ids, parents first, and prints which run became which.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::{
    Options, SERVER_TAGS, Source, Summary, copy_run, experiment_named, int, pairs, pairs_json, text,
};
use crate::http::Client;
use arbor::server::BoxError;

/// `arbor export`: prints `old-run-id new-run-id` lines, the summary on stderr.
pub fn main(args: crate::config::ExportArgs) -> Result<(), arbor::server::BoxError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let from = crate::http::Client::new(&args.server, crate::http::arbor_credentials())?;
        let to = crate::http::Client::new(&args.to, crate::http::mlflow_credentials())?;
        let options = Options {
            experiments: args.experiments,
            jobs: 1,
            progress: false,
        };
        let summary = export(from, to, &options).await?;
        if let Ok(mapping) = summary.mapping.lock() {
            for (old, new) in mapping.iter() {
                println!("{old} {new}");
            }
        }
        eprintln!(
            "exported {} runs, {} points, {} artifact files",
            summary.runs.load(std::sync::atomic::Ordering::Relaxed),
            summary.points.load(std::sync::atomic::Ordering::Relaxed),
            summary
                .artifact_files
                .load(std::sync::atomic::Ordering::Relaxed)
        );
        Ok(())
    })
}

/// Replays the chosen experiments of `from` (Arbor, or any MLflow-compatible server)
/// into `to`, which makes new run ids: parents first, so `mlflow.parentRunId` tags name
/// the new ids. The summary's mapping says which run became which.
pub async fn export(from: Client, to: Client, options: &Options) -> Result<Summary, BoxError> {
    let summary = Summary::default();
    let source = Source(&from);
    for e in source.experiments(&options.experiments).await? {
        let name = text(&e, "name");
        let target = match experiment_named(&to, &name).await? {
            Some(t) => text(&t, "experiment_id"),
            None => {
                let created = to
                    .json(
                        "POST",
                        "/api/2.0/mlflow/experiments/create",
                        Some(&json!({"name": name, "tags": pairs_json(&pairs(&e, "tags"))})),
                    )
                    .await?;
                text(&created, "experiment_id")
            }
        };
        Summary::add(&summary.experiments, 1);
        let mut runs = source.runs(&text(&e, "experiment_id")).await?;
        // Parents before children: by depth in the source's tree.
        let parent_of: HashMap<String, String> = runs
            .iter()
            .map(|r| {
                (
                    text(&r["info"], "run_id"),
                    pairs(&r["data"], "tags")
                        .remove(arbor::domain::TAG_PARENT_RUN_ID)
                        .unwrap_or_default(),
                )
            })
            .collect();
        let depth = |id: &str| {
            let mut d = 0;
            let mut at = id.to_string();
            while let Some(p) = parent_of.get(&at).filter(|p| !p.is_empty()) {
                d += 1;
                at = p.clone();
                if d > 10_000 {
                    break;
                }
            }
            d
        };
        runs.sort_by_key(|r| depth(&text(&r["info"], "run_id")));
        for r in runs {
            export_run(&from, &to, &r, &target, &summary).await?;
        }
    }
    Ok(summary)
}

async fn export_run(
    from: &Client,
    to: &Client,
    r: &Value,
    experiment_id: &str,
    summary: &Summary,
) -> Result<(), BoxError> {
    let info = &r["info"];
    let mut tags = pairs(&r["data"], "tags");
    for t in SERVER_TAGS {
        tags.remove(t);
    }
    if let Some(parent) = tags.get(arbor::domain::TAG_PARENT_RUN_ID).cloned() {
        let mapped = summary
            .mapping
            .lock()
            .ok()
            .and_then(|m| m.get(&parent).cloned());
        if let Some(new_parent) = mapped {
            tags.insert(arbor::domain::TAG_PARENT_RUN_ID.into(), new_parent);
        }
    }
    let created = to
        .json(
            "POST",
            "/api/2.0/mlflow/runs/create",
            Some(&json!({
                "experiment_id": experiment_id,
                "user_id": text(info, "user_id"),
                "run_name": text(info, "run_name"),
                "start_time": info.get("start_time").and_then(int),
                "tags": pairs_json(&tags),
            })),
        )
        .await?;
    if let Ok(mut m) = summary.mapping.lock() {
        m.insert(
            text(info, "run_id"),
            text(&created["run"]["info"], "run_id"),
        );
    }
    copy_run(from, to, r, &tags, &created["run"], true, summary, &|| {}).await
}
