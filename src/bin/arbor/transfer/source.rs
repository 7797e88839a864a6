//! Reading any MLflow-compatible server: its experiments, runs, histories and logged
//! models page by page, and its artifact files through the proxy or a run's listing.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::{HISTORY_PAGE, PAGE, Point, enc, int, list, text};
use crate::http::{Client, Refused};
use arbor::server::BoxError;

/// Reads any MLflow-compatible server.
pub(super) struct Source<'a>(pub(super) &'a Client);

impl Source<'_> {
    pub(super) async fn experiments(&self, wanted: &[String]) -> Result<Vec<Value>, BoxError> {
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let mut body = json!({"max_results": PAGE, "view_type": "ALL"});
            if !token.is_empty() {
                body["page_token"] = json!(token);
            }
            let page = self
                .0
                .json("POST", "/api/2.0/mlflow/experiments/search", Some(&body))
                .await?;
            out.extend(list(&page, "experiments").cloned());
            token = text(&page, "next_page_token");
            if token.is_empty() {
                break;
            }
        }
        if !wanted.is_empty() {
            out.retain(|e| {
                wanted
                    .iter()
                    .any(|w| *w == text(e, "name") || *w == text(e, "experiment_id"))
            });
            for w in wanted {
                if !out
                    .iter()
                    .any(|e| *w == text(e, "name") || *w == text(e, "experiment_id"))
                {
                    return Err(format!("the source has no experiment {w:?}").into());
                }
            }
        }
        Ok(out)
    }

    pub(super) async fn runs(&self, experiment_id: &str) -> Result<Vec<Value>, BoxError> {
        let mut out = Vec::new();
        let mut token = String::new();
        let mut seen = BTreeSet::new();
        loop {
            let mut body = json!({"experiment_ids": [experiment_id], "run_view_type": "ALL", "max_results": PAGE});
            if !token.is_empty() {
                body["page_token"] = json!(token);
            }
            let page = self
                .0
                .json("POST", "/api/2.0/mlflow/runs/search", Some(&body))
                .await?;
            let mut fresh = 0;
            for r in list(&page, "runs") {
                // A server whose paging repeats runs (FastTrackML's offsets can) gives
                // each run once.
                if seen.insert(text(&r["info"], "run_id")) {
                    out.push(r.clone());
                    fresh += 1;
                }
            }
            token = text(&page, "next_page_token");
            if token.is_empty() || fresh == 0 {
                break;
            }
        }
        Ok(out)
    }

    pub(super) async fn history(&self, run_id: &str, key: &str) -> Result<Vec<Point>, BoxError> {
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let mut path = format!(
                "/api/2.0/mlflow/metrics/get-history?run_id={}&metric_key={}&max_results={HISTORY_PAGE}",
                enc(run_id),
                enc(key)
            );
            if !token.is_empty() {
                path.push_str(&format!("&page_token={}", enc(&token)));
            }
            let page = self.0.json("GET", &path, None).await?;
            out.extend(list(&page, "metrics").map(Point::of));
            token = text(&page, "next_page_token");
            if token.is_empty() {
                break;
            }
        }
        Ok(out)
    }

    pub(super) async fn logged_models(&self, experiment_id: &str) -> Result<Vec<Value>, BoxError> {
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let mut body = json!({"experiment_ids": [experiment_id], "max_results": 100});
            if !token.is_empty() {
                body["page_token"] = json!(token);
            }
            let page = match self
                .0
                .json("POST", "/api/2.0/mlflow/logged-models/search", Some(&body))
                .await
            {
                Ok(p) => p,
                // A server without logged models (MLflow 2, FastTrackML) has none to copy.
                Err(e) if e.downcast_ref::<Refused>().is_some_and(|r| r.status == 404) => {
                    return Ok(vec![]);
                }
                Err(e) => return Err(e),
            };
            out.extend(list(&page, "models").cloned());
            token = text(&page, "next_page_token");
            if token.is_empty() {
                break;
            }
        }
        Ok(out)
    }
}

/// The artifact proxy's path of an `mlflow-artifacts:` URI (`mlflow-artifacts:/1/abc/artifacts`
/// → `1/abc/artifacts`); `None` for a location the API does not serve.
pub(super) fn proxied(uri: &str) -> Option<String> {
    let rest = uri.strip_prefix("mlflow-artifacts:")?;
    let rest = rest.trim_start_matches('/');
    // `mlflow-artifacts://host:port/path` names a server; the path is what matters.
    let rest = if uri.starts_with("mlflow-artifacts://") {
        rest.split_once('/').map_or("", |(_, p)| p)
    } else {
        rest
    };
    Some(rest.trim_end_matches('/').to_string())
}

/// Where a source's files are read from: its artifact proxy (`mlflow-artifacts:`
/// locations), or, for a run whose files the server stores elsewhere (`file://` on the
/// server's disk, as FastTrackML keeps them), the run's listing and download endpoints.
pub(super) enum Files {
    Proxy(String),
    Run(String),
}

impl Files {
    pub(super) fn of(uri: &str, run_id: Option<&str>) -> Option<Files> {
        match (proxied(uri), run_id) {
            (Some(dir), _) => Some(Files::Proxy(dir)),
            (None, Some(run)) => Some(Files::Run(run.to_string())),
            (None, None) => None,
        }
    }

    pub(super) async fn list(&self, c: &Client) -> Result<BTreeMap<String, u64>, BoxError> {
        match self {
            Files::Proxy(dir) => artifact_files(c, dir).await,
            Files::Run(run) => run_files(c, run).await,
        }
    }

    pub(super) async fn get(&self, c: &Client, rel: &str) -> Result<bytes::Bytes, BoxError> {
        match self {
            Files::Proxy(dir) => download(c, dir, rel).await,
            Files::Run(run) => {
                // FastTrackML serves `artifacts/get`; mlflow server `get-artifact`.
                for path in [
                    format!(
                        "/api/2.0/mlflow/artifacts/get?run_uuid={}&path={}",
                        enc(run),
                        enc(rel)
                    ),
                    format!("/get-artifact?run_uuid={}&path={}", enc(run), enc(rel)),
                ] {
                    let (status, body) = c.send("GET", &path, None, vec![]).await?;
                    if status == 200 {
                        return Ok(body);
                    }
                }
                Err(format!("run {run}: cannot download {rel}").into())
            }
        }
    }
}

/// A listed file's size (0 when the server gives none, or a negative one).
pub(super) fn size_of(f: &Value) -> u64 {
    f.get("file_size")
        .and_then(int)
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(0)
}

/// Every file of a run, through MLflow's `ListArtifacts`: relative path → size.
pub(super) async fn run_files(c: &Client, run_id: &str) -> Result<BTreeMap<String, u64>, BoxError> {
    let mut out = BTreeMap::new();
    let mut pending = vec![String::new()];
    while let Some(sub) = pending.pop() {
        let page = c
            .json(
                "GET",
                &format!(
                    "/api/2.0/mlflow/artifacts/list?run_id={}&path={}",
                    enc(run_id),
                    enc(&sub)
                ),
                None,
            )
            .await?;
        for f in list(&page, "files") {
            let rel = text(f, "path");
            if f.get("is_dir").and_then(Value::as_bool) == Some(true) {
                pending.push(rel);
            } else {
                out.insert(rel, size_of(f));
            }
        }
    }
    Ok(out)
}

/// Every file under `dir` on a server's artifact proxy: relative path → size.
pub(super) async fn artifact_files(
    c: &Client,
    dir: &str,
) -> Result<BTreeMap<String, u64>, BoxError> {
    let mut out = BTreeMap::new();
    let mut pending = vec![String::new()];
    while let Some(sub) = pending.pop() {
        let full = if sub.is_empty() {
            dir.to_string()
        } else {
            format!("{dir}/{sub}")
        };
        let page = c
            .json(
                "GET",
                &format!("/api/2.0/mlflow-artifacts/artifacts?path={}", enc(&full)),
                None,
            )
            .await?;
        for f in list(&page, "files") {
            let name = text(f, "path");
            let name = name.rsplit('/').next().unwrap_or(&name).to_string();
            let rel = if sub.is_empty() {
                name
            } else {
                format!("{sub}/{name}")
            };
            if f.get("is_dir").and_then(Value::as_bool) == Some(true) {
                pending.push(rel);
            } else {
                out.insert(rel, size_of(f));
            }
        }
    }
    Ok(out)
}

pub(super) fn artifact_path(dir: &str, rel: &str) -> String {
    format!(
        "/api/2.0/mlflow-artifacts/artifacts/{}",
        format!("{dir}/{rel}")
            .split('/')
            .map(enc)
            .collect::<Vec<_>>()
            .join("/")
    )
}

pub(super) async fn download(c: &Client, dir: &str, rel: &str) -> Result<bytes::Bytes, BoxError> {
    let (status, body) = c
        .send("GET", &artifact_path(dir, rel), None, vec![])
        .await?;
    if status != 200 {
        return Err(format!("downloading {dir}/{rel}: HTTP {status}").into());
    }
    Ok(body)
}
