//! `arbor import --verify`: compares a source with Arbor run by run, and says what
//! differs.

use std::collections::BTreeSet;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::source::download;
use super::{
    Files, Options, SERVER_TAGS, Source, artifact_files, enc, experiment_named, int, list, pairs,
    proxied, text,
};
use crate::http::Client;
use arbor::server::BoxError;

/// Compares the chosen experiments of `source` with `arbor` run by run: params, tags,
/// status, times, lifecycle, every history, artifact sizes and SHA-256. Returns the
/// differences, in words (none: they match).
pub async fn verify(
    source: &Client,
    arbor: &Client,
    options: &Options,
) -> Result<Vec<String>, BoxError> {
    let mut diffs = Vec::new();
    for e in Source(source).experiments(&options.experiments).await? {
        let name = text(&e, "name");
        let Some(target) = experiment_named(arbor, &name).await? else {
            diffs.push(format!("experiment {name:?}: missing"));
            continue;
        };
        let target_exp = &target;
        if text(&e, "lifecycle_stage") != text(target_exp, "lifecycle_stage") {
            diffs.push(format!("experiment {name:?}: lifecycle stage differs"));
        }
        let target_tags = pairs(target_exp, "tags");
        for (k, v) in pairs(&e, "tags") {
            if target_tags.get(&k) != Some(&v) {
                diffs.push(format!("experiment {name:?}: tag {k} differs"));
            }
        }
        for r in Source(source).runs(&text(&e, "experiment_id")).await? {
            let id = text(&r["info"], "run_id");
            let have = match arbor
                .json(
                    "GET",
                    &format!("/api/2.0/mlflow/runs/get?run_id={}", enc(&id)),
                    None,
                )
                .await
            {
                Ok(h) => h["run"].clone(),
                Err(_) => {
                    diffs.push(format!("run {id}: missing"));
                    continue;
                }
            };
            diffs.extend(compare_run(source, arbor, &r, &have).await?);
        }
    }
    Ok(diffs)
}

async fn compare_run(
    source: &Client,
    arbor: &Client,
    r: &Value,
    have: &Value,
) -> Result<Vec<String>, BoxError> {
    let id = text(&r["info"], "run_id");
    let mut diffs = Vec::new();
    for field in ["status", "lifecycle_stage", "run_name", "user_id"] {
        if text(&r["info"], field) != text(&have["info"], field) {
            diffs.push(format!("run {id}: {field} differs"));
        }
    }
    for field in ["start_time", "end_time"] {
        if r["info"].get(field).and_then(int) != have["info"].get(field).and_then(int) {
            diffs.push(format!("run {id}: {field} differs"));
        }
    }
    if pairs(&r["data"], "params") != pairs(&have["data"], "params") {
        diffs.push(format!("run {id}: params differ"));
    }
    let have_tags = pairs(&have["data"], "tags");
    for (k, v) in pairs(&r["data"], "tags") {
        if !SERVER_TAGS.contains(&k.as_str()) && have_tags.get(&k) != Some(&v) {
            diffs.push(format!("run {id}: tag {k} differs"));
        }
    }
    let keys: BTreeSet<String> = list(&r["data"], "metrics")
        .map(|m| text(m, "key"))
        .collect();
    let have_keys: BTreeSet<String> = list(&have["data"], "metrics")
        .map(|m| text(m, "key"))
        .collect();
    if keys != have_keys {
        diffs.push(format!("run {id}: metric keys differ"));
    }
    for key in keys {
        let mut a = Source(source).history(&id, &key).await?;
        let mut b = Source(arbor).history(&id, &key).await?;
        // Arbor answers exact repeats of a point once, as its histories are sets.
        a.sort();
        a.dedup();
        b.sort();
        b.dedup();
        if a != b {
            diffs.push(format!(
                "run {id}: metric {key}: {} points in the source, {} here",
                a.len(),
                b.len()
            ));
        }
    }
    if let (Some(src), Some(dst)) = (
        Files::of(&text(&r["info"], "artifact_uri"), Some(&id)),
        proxied(&text(&have["info"], "artifact_uri")),
    ) {
        let a = src.list(source).await?;
        let b = artifact_files(arbor, &dst).await?;
        if a != b {
            diffs.push(format!("run {id}: artifact files or sizes differ"));
        } else {
            for rel in a.keys() {
                let x = Sha256::digest(src.get(source, rel).await?);
                let y = Sha256::digest(download(arbor, &dst, rel).await?);
                if x != y {
                    diffs.push(format!("run {id}: artifact {rel} differs"));
                }
            }
        }
    }
    Ok(diffs)
}
