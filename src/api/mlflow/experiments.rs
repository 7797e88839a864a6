//! `/mlflow/experiments/...`: create, get, get by name, search, update (rename),
//! delete, restore, and experiment tags.

use axum::Json;
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;

use super::request::{self, Mlflow, required};
use super::response::{Empty, Experiment, Page, page};
use super::{KeyValueIn, Routes, Shared, json, key_values};
use crate::auth::Need;
use crate::domain::commands::{
    CreateExperiment, DeleteExperiment, DeleteExperimentTag, RenameExperiment, RestoreExperiment,
    SetExperimentTag,
};
use crate::domain::{Error, ViewType};

pub(super) fn routes() -> Routes {
    Routes::new()
        .route("/experiments/create", post(create))
        .route("/experiments/get", get(get_by_id))
        .route("/experiments/get-by-name", get(get_by_name))
        .route("/experiments/search", post(search).get(search))
        .route("/experiments/update", post(update))
        .route("/experiments/delete", post(delete))
        .route("/experiments/restore", post(restore))
        .route("/experiments/set-experiment-tag", post(set_tag))
        .route("/experiments/delete-experiment-tag", post(delete_tag))
}

/// The fields the experiment RPCs take, each optional on the wire; every handler
/// requires what it needs, in MLflow's order.
#[derive(Deserialize, Debug)]
struct ExperimentRequest {
    #[serde(default, deserialize_with = "request::string", alias = "experimentId")]
    experiment_id: Option<String>,
    #[serde(
        default,
        deserialize_with = "request::string",
        alias = "experimentName"
    )]
    experiment_name: Option<String>,
    #[serde(default, deserialize_with = "request::string")]
    name: Option<String>,
    #[serde(default, deserialize_with = "request::string", alias = "newName")]
    new_name: Option<String>,
    #[serde(
        default,
        deserialize_with = "request::string",
        alias = "artifactLocation"
    )]
    artifact_location: Option<String>,
    #[serde(default, deserialize_with = "request::string")]
    key: Option<String>,
    #[serde(default, deserialize_with = "request::string")]
    value: Option<String>,
    #[serde(default)]
    tags: Option<Vec<KeyValueIn>>,
}

#[derive(serde::Serialize)]
struct Created {
    experiment_id: String,
}

#[derive(serde::Serialize)]
struct One<'a> {
    experiment: Experiment<'a>,
}

async fn create(
    state: Shared,
    Mlflow(r): Mlflow<ExperimentRequest>,
) -> Result<Json<Created>, Error> {
    let name = required("name", r.name)?;
    let tags = key_values("tags", r.tags.unwrap_or_default())?;
    let experiment_id = state
        .store
        .any()
        .submit(CreateExperiment {
            name,
            artifact_location: r.artifact_location.unwrap_or_default(),
            tags,
        })
        .await?;
    Ok(Json(Created { experiment_id }))
}

async fn get_by_id(state: Shared, Mlflow(r): Mlflow<ExperimentRequest>) -> Result<Response, Error> {
    let id = required("experiment_id", r.experiment_id)?;
    let e = state
        .store
        .on_experiment(&id, Need::Read)?
        .get_experiment(&id)?;
    json(&One {
        experiment: Experiment::from(&e),
    })
}

async fn get_by_name(
    state: Shared,
    Mlflow(r): Mlflow<ExperimentRequest>,
) -> Result<Response, Error> {
    let name = required("experiment_name", r.experiment_name)?;
    let e = state
        .store
        .on_experiment_named(&name, Need::Read)?
        .get_experiment_by_name(&name)?;
    json(&One {
        experiment: Experiment::from(&e),
    })
}

#[derive(Deserialize, Debug)]
struct SearchRequest {
    #[serde(default, deserialize_with = "request::enumeration", alias = "viewType")]
    view_type: Option<ViewType>,
    #[serde(default, deserialize_with = "request::string")]
    filter: Option<String>,
    #[serde(default, deserialize_with = "request::strings", alias = "orderBy")]
    order_by: Vec<String>,
    #[serde(default, deserialize_with = "request::int64", alias = "maxResults")]
    max_results: Option<i64>,
    #[serde(default, deserialize_with = "request::string", alias = "pageToken")]
    page_token: Option<String>,
}

async fn search(state: Shared, Mlflow(r): Mlflow<SearchRequest>) -> Result<Response, Error> {
    let (experiments, next) = state.store.search_experiments(
        r.view_type.unwrap_or_default(),
        &r.filter.unwrap_or_default(),
        &r.order_by,
        r.max_results,
        &r.page_token.unwrap_or_default(),
    )?;
    let page: Page<Experiment> = page(
        "experiments",
        experiments.iter().map(Experiment::from).collect(),
        next,
    );
    json(&page)
}

async fn update(state: Shared, Mlflow(r): Mlflow<ExperimentRequest>) -> Result<Json<Empty>, Error> {
    let id = required("experiment_id", r.experiment_id)?;
    let new_name = required("new_name", r.new_name)?;
    state
        .store
        .on_experiment(&id, Need::Update)?
        .submit(RenameExperiment {
            experiment_id: id,
            new_name,
        })
        .await?;
    Ok(Json(Empty {}))
}

async fn delete(state: Shared, Mlflow(r): Mlflow<ExperimentRequest>) -> Result<Json<Empty>, Error> {
    let id = required("experiment_id", r.experiment_id)?;
    state
        .store
        .on_experiment(&id, Need::Delete)?
        .submit(DeleteExperiment { experiment_id: id })
        .await?;
    Ok(Json(Empty {}))
}

async fn restore(
    state: Shared,
    Mlflow(r): Mlflow<ExperimentRequest>,
) -> Result<Json<Empty>, Error> {
    let id = required("experiment_id", r.experiment_id)?;
    state
        .store
        .on_experiment(&id, Need::Delete)?
        .submit(RestoreExperiment { experiment_id: id })
        .await?;
    Ok(Json(Empty {}))
}

async fn set_tag(
    state: Shared,
    Mlflow(r): Mlflow<ExperimentRequest>,
) -> Result<Json<Empty>, Error> {
    let id = required("experiment_id", r.experiment_id)?;
    let key = required("key", r.key)?;
    state
        .store
        .on_experiment(&id, Need::Update)?
        .submit(SetExperimentTag {
            experiment_id: id,
            key,
            value: r.value.unwrap_or_default(),
        })
        .await?;
    Ok(Json(Empty {}))
}

async fn delete_tag(
    state: Shared,
    Mlflow(r): Mlflow<ExperimentRequest>,
) -> Result<Json<Empty>, Error> {
    let id = required("experiment_id", r.experiment_id)?;
    let key = required("key", r.key)?;
    state
        .store
        .on_experiment(&id, Need::Update)?
        .submit(DeleteExperimentTag {
            experiment_id: id,
            key,
        })
        .await?;
    Ok(Json(Empty {}))
}
