//! `SearchLoggedModels`: what `runs:/` URIs and `mlflow.search_logged_models` use. The
//! filter takes the attributes MLflow's clients send (`name`, `model_id`,
//! `source_run_id`, `status`, `model_type`) and `tags.`/`params.` with `=`, `!=`, `LIKE`,
//! `ILIKE`; anything else is refused rather than ignored.

use serde_json::Value;

use super::State;
use super::json;
use super::request::Params;
use crate::domain::Error;
use crate::projection::LoggedModelRecord;

pub(crate) fn search(state: &State, p: &Params) -> Result<Value, Error> {
    let experiment_ids = p.strings("experiment_ids")?;
    let filter = p.string_or_empty("filter")?;
    let matches = crate::search::compile_model_filter(&filter)?;
    let max = p.int("max_results")?.unwrap_or(50);
    if !(1..=50_000).contains(&max) {
        return Err(Error::invalid(format!(
            "Invalid value {max} for parameter 'max_results' supplied: it must be between 1 and 50000"
        )));
    }
    let mut models: Vec<LoggedModelRecord> = state
        .store
        .logged_models()?
        .into_iter()
        .filter(|m| !m.deleted)
        .filter(|m| {
            experiment_ids.is_empty() || experiment_ids.contains(&m.experiment_id.to_string())
        })
        .filter(|m| matches(m))
        .collect();
    // Newest first, as MLflow's default order.
    models.sort_by(|a, b| {
        b.creation_time
            .cmp(&a.creation_time)
            .then(a.model_id.cmp(&b.model_id))
    });
    let offset = crate::search::page::decode_offset(&p.string_or_empty("page_token")?)?;
    let (page, next) =
        crate::search::page::slice(models, offset, usize::try_from(max).unwrap_or(50));
    Ok(json::page(
        "models",
        page.iter().map(json::logged_model).collect(),
        next,
    ))
}
