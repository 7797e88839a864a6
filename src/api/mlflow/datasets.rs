//! `/mlflow/experiments/search-datasets`: the UI's list of the datasets an experiment's
//! runs used.

use axum::response::Response;
use axum::routing::post;
use serde::{Deserialize, Serialize};

use super::request::{self, Mlflow};
use super::response::page;
use super::{Routes, Shared, json};
use crate::auth::Need;
use crate::domain::{Error, INPUT_TAG_CONTEXT, ViewType};
use crate::store::SEARCH_MAX_RESULTS_THRESHOLD;

/// Most experiments `search-datasets` takes, as MLflow.
const SEARCH_DATASETS_MAX_EXPERIMENTS: usize = 20;

pub(super) fn routes() -> Routes {
    Routes::new().route("/experiments/search-datasets", post(search))
}

#[derive(Deserialize, Debug)]
struct SearchRequest {
    #[serde(
        default,
        deserialize_with = "request::strings",
        alias = "experimentIds"
    )]
    experiment_ids: Vec<String>,
}

#[derive(Serialize, PartialEq, Eq, PartialOrd, Ord)]
struct Summary {
    experiment_id: String,
    name: String,
    digest: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<String>,
}

/// MLflow's `SearchDatasets`: the distinct (name, digest, context) of the dataset inputs
/// of the experiments' active runs.
async fn search(state: Shared, Mlflow(r): Mlflow<SearchRequest>) -> Result<Response, Error> {
    let ids = r.experiment_ids;
    if ids.is_empty() {
        return Err(Error::invalid(
            "SearchDatasets request must specify at least one experiment_id.",
        ));
    }
    if ids.len() > SEARCH_DATASETS_MAX_EXPERIMENTS {
        return Err(Error::invalid(format!(
            "SearchDatasets request cannot specify more than {SEARCH_DATASETS_MAX_EXPERIMENTS} experiment_ids. Received {} experiment_ids.",
            ids.len()
        )));
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut token = String::new();
    loop {
        let (runs, next) = state.store.on_experiments(&ids, Need::Read)?.search_runs(
            &ids,
            ViewType::ActiveOnly,
            "",
            &[],
            Some(SEARCH_MAX_RESULTS_THRESHOLD),
            &token,
        )?;
        for run in &runs {
            for d in &run.dataset_inputs {
                let Some(ds) = &d.dataset else { continue };
                let context = d
                    .tags
                    .iter()
                    .find(|t| t.key == INPUT_TAG_CONTEXT)
                    .map(|t| t.value.clone());
                seen.insert(Summary {
                    experiment_id: run.experiment_id.to_string(),
                    name: ds.name.clone(),
                    digest: ds.digest.clone(),
                    context,
                });
            }
        }
        match next {
            Some(t) => token = t,
            None => break,
        }
    }
    json(&page("dataset_summaries", seen.into_iter().collect(), None))
}
