//! `/mlflow/logged-models/...` (MLflow 3): create, get, search, finalize, tags, params,
//! delete, and the artifact listing of a model. What `runs:/` URIs and
//! `mlflow.search_logged_models` use.

use axum::Json;
use axum::extract::Path;
use axum::response::Response;
use axum::routing::{delete, get, patch, post};
use serde::{Deserialize, Serialize};

use super::artifacts::list_under;
use super::request::{self, Mlflow, present, required};
use super::response::{Empty, LoggedModel, Page, page};
use super::{KeyValueIn, Routes, Shared, json, key_values};
use crate::auth::Need;
use crate::domain::commands::{
    CreateLoggedModel, DeleteLoggedModel, DeleteLoggedModelTag, FinalizeLoggedModel,
    LogLoggedModelParams, SetLoggedModelTags,
};
use crate::domain::{Error, LoggedModelStatus};
use crate::search::{DatasetFilter, ModelOrder};

pub(super) fn routes() -> Routes {
    Routes::new()
        .route("/logged-models", post(create))
        .route("/logged-models/search", post(search))
        .route(
            "/logged-models/{id}",
            get(get_model).patch(finalize).delete(delete_model),
        )
        .route("/logged-models/{id}/tags", patch(set_tags))
        .route("/logged-models/{id}/tags/{key}", delete(delete_tag))
        .route("/logged-models/{id}/params", post(log_params))
        .route(
            "/logged-models/{id}/artifacts/directories",
            get(list_artifacts),
        )
}

#[derive(Serialize)]
struct OneModel<'a> {
    model: LoggedModel<'a>,
}

pub(crate) fn one(m: &crate::projection::LoggedModelRecord) -> Result<Response, Error> {
    json(&OneModel {
        model: LoggedModel::from(m),
    })
}

#[derive(Deserialize, Debug)]
struct CreateRequest {
    #[serde(default, deserialize_with = "request::string", alias = "experimentId")]
    experiment_id: Option<String>,
    #[serde(default, deserialize_with = "request::string")]
    name: Option<String>,
    #[serde(default, deserialize_with = "request::string", alias = "modelType")]
    model_type: Option<String>,
    #[serde(default, deserialize_with = "request::string", alias = "sourceRunId")]
    source_run_id: Option<String>,
    #[serde(default)]
    params: Option<Vec<KeyValueIn>>,
    #[serde(default)]
    tags: Option<Vec<KeyValueIn>>,
}

async fn create(state: Shared, Mlflow(r): Mlflow<CreateRequest>) -> Result<Response, Error> {
    let experiment_id = required("experiment_id", r.experiment_id)?;
    let store = state.store.on_experiment(&experiment_id, Need::Update)?;
    let new = CreateLoggedModel {
        experiment_id,
        name: r.name.unwrap_or_default(),
        model_type: r.model_type.unwrap_or_default(),
        source_run_id: r.source_run_id.unwrap_or_default(),
        params: key_values("params", r.params.unwrap_or_default())?,
        tags: key_values("tags", r.tags.unwrap_or_default())?,
    };
    one(&store.submit(new).await?)
}

#[derive(Deserialize, Debug)]
struct SearchRequest {
    #[serde(
        default,
        deserialize_with = "request::strings",
        alias = "experimentIds"
    )]
    experiment_ids: Vec<String>,
    #[serde(default, deserialize_with = "request::string")]
    filter: Option<String>,
    #[serde(default, deserialize_with = "request::int64", alias = "maxResults")]
    max_results: Option<i64>,
    #[serde(default, deserialize_with = "request::string", alias = "pageToken")]
    page_token: Option<String>,
    #[serde(default)]
    datasets: Option<Vec<DatasetFilterIn>>,
    #[serde(default, alias = "orderBy")]
    order_by: Option<Vec<OrderByIn>>,
}

#[derive(Deserialize, Debug)]
struct OrderByIn {
    #[serde(default, deserialize_with = "request::string", alias = "fieldName")]
    field_name: Option<String>,
    #[serde(default, deserialize_with = "request::boolean")]
    ascending: Option<bool>,
    #[serde(default, deserialize_with = "request::string", alias = "datasetName")]
    dataset_name: Option<String>,
    #[serde(default, deserialize_with = "request::string", alias = "datasetDigest")]
    dataset_digest: Option<String>,
}

#[derive(Deserialize, Debug)]
struct DatasetFilterIn {
    #[serde(default, deserialize_with = "request::string", alias = "datasetName")]
    dataset_name: Option<String>,
    #[serde(default, deserialize_with = "request::string", alias = "datasetDigest")]
    dataset_digest: Option<String>,
}

async fn search(state: Shared, Mlflow(r): Mlflow<SearchRequest>) -> Result<Response, Error> {
    let datasets: Vec<DatasetFilter> = r
        .datasets
        .unwrap_or_default()
        .into_iter()
        .map(|d| DatasetFilter {
            name: d.dataset_name.unwrap_or_default(),
            digest: d.dataset_digest.unwrap_or_default(),
        })
        .collect();
    let order_by = r
        .order_by
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, o)| {
            Ok(ModelOrder {
                field_name: required(&format!("order_by[{i}].field_name"), o.field_name)?,
                ascending: o.ascending.unwrap_or(true),
                dataset_name: o.dataset_name.unwrap_or_default(),
                dataset_digest: o.dataset_digest.unwrap_or_default(),
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    // No experiment named means every experiment: that is for admins.
    let store = if r.experiment_ids.is_empty() {
        state.store.admin()?
    } else {
        state.store.on_experiments(&r.experiment_ids, Need::Read)?
    };
    let (models, next) = store.search_logged_models(
        &r.experiment_ids,
        &r.filter.unwrap_or_default(),
        &datasets,
        &order_by,
        r.max_results,
        &r.page_token.unwrap_or_default(),
    )?;
    let page: Page<LoggedModel> = page(
        "models",
        models.iter().map(LoggedModel::from).collect(),
        next,
    );
    json(&page)
}

#[derive(Deserialize, Debug)]
struct GetRequest {
    #[serde(default, deserialize_with = "request::boolean", alias = "allowDeleted")]
    allow_deleted: Option<bool>,
}

async fn get_model(
    state: Shared,
    Path(id): Path<String>,
    Mlflow(r): Mlflow<GetRequest>,
) -> Result<Response, Error> {
    one(&state
        .store
        .on_logged_model(&id, Need::Read)?
        .get_logged_model(&id, r.allow_deleted.unwrap_or(false))?)
}

#[derive(Deserialize, Debug)]
struct FinalizeRequest {
    #[serde(default, deserialize_with = "request::enumeration")]
    status: Option<LoggedModelStatus>,
    #[serde(default, deserialize_with = "request::string", alias = "statusMessage")]
    status_message: Option<String>,
}

async fn finalize(
    state: Shared,
    Path(id): Path<String>,
    Mlflow(r): Mlflow<FinalizeRequest>,
) -> Result<Response, Error> {
    let status = present("status", r.status)?;
    one(&state
        .store
        .on_logged_model(&id, Need::Update)?
        .submit(FinalizeLoggedModel {
            model_id: id,
            status: status as i32,
            status_message: r.status_message.unwrap_or_default(),
        })
        .await?)
}

async fn delete_model(state: Shared, Path(id): Path<String>) -> Result<Json<Empty>, Error> {
    state
        .store
        .on_logged_model(&id, Need::Delete)?
        .submit(DeleteLoggedModel { model_id: id })
        .await?;
    Ok(Json(Empty {}))
}

#[derive(Deserialize, Debug)]
struct TagsRequest {
    #[serde(default)]
    tags: Option<Vec<KeyValueIn>>,
}

async fn set_tags(
    state: Shared,
    Path(id): Path<String>,
    Mlflow(r): Mlflow<TagsRequest>,
) -> Result<Response, Error> {
    let tags = key_values("tags", r.tags.unwrap_or_default())?;
    one(&state
        .store
        .on_logged_model(&id, Need::Update)?
        .submit(SetLoggedModelTags { model_id: id, tags })
        .await?)
}

async fn delete_tag(
    state: Shared,
    Path((id, key)): Path<(String, String)>,
) -> Result<Json<Empty>, Error> {
    state
        .store
        .on_logged_model(&id, Need::Update)?
        .submit(DeleteLoggedModelTag { model_id: id, key })
        .await?;
    Ok(Json(Empty {}))
}

#[derive(Deserialize, Debug)]
struct ParamsRequest {
    #[serde(default)]
    params: Option<Vec<KeyValueIn>>,
}

async fn log_params(
    state: Shared,
    Path(id): Path<String>,
    Mlflow(r): Mlflow<ParamsRequest>,
) -> Result<Json<Empty>, Error> {
    let params = key_values("params", r.params.unwrap_or_default())?;
    state
        .store
        .on_logged_model(&id, Need::Update)?
        .submit(LogLoggedModelParams {
            model_id: id,
            params,
        })
        .await?;
    Ok(Json(Empty {}))
}

#[derive(Deserialize, Debug)]
struct ArtifactsRequest {
    #[serde(
        default,
        deserialize_with = "request::string",
        alias = "artifactDirectoryPath"
    )]
    artifact_directory_path: Option<String>,
}

async fn list_artifacts(
    state: Shared,
    Path(id): Path<String>,
    Mlflow(r): Mlflow<ArtifactsRequest>,
) -> Result<Response, Error> {
    let m = state
        .store
        .on_logged_model(&id, Need::Read)?
        .get_logged_model(&id, false)?;
    list_under(
        &state,
        &m.artifact_uri,
        &r.artifact_directory_path.unwrap_or_default(),
    )
    .await
}
