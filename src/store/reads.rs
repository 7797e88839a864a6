//! The store's reads: records, searches, histories, the run tree, users and grants,
//! all from the projections (never the log), each as of the last committed group.

use crate::db::keys;
use crate::domain::{Error, MetricPoint, ViewType, validation};
use crate::hierarchy::{self, TreeNode};
use crate::pb;
use crate::projection::{self, ExperimentRecord, LoggedModelRecord, RunRecord};

use super::{SEARCH_MAX_RESULTS_DEFAULT, SEARCH_MAX_RESULTS_THRESHOLD, Store};

impl Store {
    /// A run and its subtree, `max_depth` levels down (absent: all, up to
    /// `hierarchy::MAX_TREE_DEPTH`), children in start-time order. Runs the view
    /// excludes are left out with their subtrees; the requested run itself is always there.
    /// Only `visible` runs are shown (`hierarchy::Visible`).
    pub fn run_tree(
        &self,
        run_id: &str,
        max_depth: Option<u32>,
        view: ViewType,
        visible: hierarchy::Visible,
    ) -> Result<TreeNode, Error> {
        hierarchy::run_tree(&self.tree()?, run_id, max_depth, view, visible)
    }

    /// A page of a run's visible children in start-time order.
    pub fn children(
        &self,
        run_id: &str,
        view: ViewType,
        visible: hierarchy::Visible,
        max_results: Option<i64>,
        page_token: &str,
    ) -> Result<(Vec<RunRecord>, Option<String>), Error> {
        let limit = page_limit(max_results)?;
        hierarchy::children(&self.tree()?, run_id, view, visible, limit, page_token)
    }

    /// The run at a path of names in an experiment, from its root down (see
    /// `hierarchy::run_at_path`).
    pub fn run_at_path(
        &self,
        experiment_id: &str,
        path: &[String],
        visible: hierarchy::Visible,
    ) -> Result<RunRecord, Error> {
        hierarchy::run_at_path(&self.tree()?, experiment_id, path, visible)
    }

    /// The run's parent, its parent, and so on up to the root or the first run that is
    /// not `visible`.
    pub fn ancestors(
        &self,
        run_id: &str,
        visible: hierarchy::Visible,
    ) -> Result<Vec<RunRecord>, Error> {
        hierarchy::ancestors(&self.tree()?, run_id, visible)
    }

    /// A logged model; deleted ones only with `allow_deleted`.
    pub fn get_logged_model(
        &self,
        model_id: &str,
        allow_deleted: bool,
    ) -> Result<LoggedModelRecord, Error> {
        match projection::load_logged_model(&self.tree()?, model_id)? {
            Some(m) if allow_deleted || !m.deleted => Ok(m),
            _ => Err(Error::NotFound(format!(
                "Logged model with ID '{model_id}' not found."
            ))),
        }
    }

    /// Logged models of the given experiments (all, when none is named) that pass an
    /// MLflow filter, newest first, a page at a time.
    pub fn search_logged_models(
        &self,
        experiment_ids: &[String],
        filter: &str,
        datasets: &[crate::search::DatasetFilter],
        order_by: &[crate::search::ModelOrder],
        max_results: Option<i64>,
        page_token: &str,
    ) -> Result<(Vec<LoggedModelRecord>, Option<String>), Error> {
        crate::search::search_logged_models(
            self.logged_models()?,
            experiment_ids,
            filter,
            datasets,
            order_by,
            max_results,
            page_token,
        )
    }

    /// Every logged model, deleted ones included.
    fn logged_models(&self) -> Result<Vec<LoggedModelRecord>, Error> {
        let mut out = Vec::new();
        for kv in self.tree()?.scan_prefix([keys::LOGGED_MODEL]) {
            let (_, v) = kv?;
            out.push(<LoggedModelRecord as prost::Message>::decode(v.as_ref())?);
        }
        Ok(out)
    }

    /// The tree to read from; `Closed` once the store is closed.
    pub(super) fn tree(&self) -> Result<sled::Tree, Error> {
        let handles = self.inner.handles.read().map_err(|_| Error::Closed)?;
        handles
            .as_ref()
            .map(|h| h.tree.clone())
            .ok_or(Error::Closed)
    }

    /// A user (`--auth`), if there is one by that name.
    pub fn user(&self, name: &str) -> Result<Option<projection::access::UserRecord>, Error> {
        projection::access::load_user(&self.tree()?, name)
    }

    /// Every user, by name.
    pub fn users(&self) -> Result<Vec<projection::access::UserRecord>, Error> {
        projection::access::users(&self.tree()?)
    }

    /// An API token by its id, if it exists (revoked tokens do not).
    pub fn token(&self, token_id: &str) -> Result<Option<projection::access::TokenRecord>, Error> {
        projection::access::load_token(&self.tree()?, token_id)
    }

    /// Every token, by id.
    pub fn tokens(&self) -> Result<Vec<projection::access::TokenRecord>, Error> {
        projection::access::tokens(&self.tree()?)
    }

    /// The permission granted to `name` on an experiment, if one was.
    pub fn grant(
        &self,
        experiment_id: u64,
        name: &str,
    ) -> Result<Option<crate::domain::access::Permission>, Error> {
        projection::access::grant(&self.tree()?, experiment_id, name)
    }

    pub fn get_experiment(&self, experiment_id: &str) -> Result<ExperimentRecord, Error> {
        let id = validation::experiment_id(experiment_id)?;
        projection::load_experiment(&self.tree()?, id)?
            .ok_or_else(|| Error::NotFound(format!("No Experiment with id={experiment_id} exists")))
    }

    pub fn get_experiment_by_name(&self, name: &str) -> Result<ExperimentRecord, Error> {
        validation::require("experiment_name", name)?;
        let not_found = || Error::NotFound(format!("Could not find experiment with name '{name}'"));
        let tree = self.tree()?;
        let id = projection::experiment_id_by_name(&tree, name)?.ok_or_else(not_found)?;
        projection::load_experiment(&tree, id)?.ok_or_else(not_found)
    }

    /// Experiments matching an MLflow filter, in the given order (default
    /// `creation_time DESC, experiment_id ASC`).
    pub fn search_experiments(
        &self,
        view: ViewType,
        filter: &str,
        order_by: &[String],
        max_results: Option<i64>,
        page_token: &str,
    ) -> Result<(Vec<ExperimentRecord>, Option<String>), Error> {
        self.search_experiments_where(view, filter, order_by, max_results, page_token, &|_| true)
    }

    /// `search_experiments` over the experiments `visible` admits (those a caller may
    /// read).
    pub fn search_experiments_where(
        &self,
        view: ViewType,
        filter: &str,
        order_by: &[String],
        max_results: Option<i64>,
        page_token: &str,
        visible: &dyn Fn(u64) -> bool,
    ) -> Result<(Vec<ExperimentRecord>, Option<String>), Error> {
        let limit = page_limit(max_results)?;
        crate::search::search_experiments(
            &self.tree()?,
            view,
            filter,
            order_by,
            limit,
            page_token,
            visible,
        )
    }

    pub fn get_run(&self, run_id: &str) -> Result<RunRecord, Error> {
        projection::find_run(&self.tree()?, run_id)
    }

    /// Runs of the given experiments matching an MLflow filter, in the given order
    /// (default `start_time DESC, run_id ASC`). No experiment ids, no runs.
    pub fn search_runs(
        &self,
        experiment_ids: &[String],
        view: ViewType,
        filter: &str,
        order_by: &[String],
        max_results: Option<i64>,
        page_token: &str,
    ) -> Result<(Vec<RunRecord>, Option<String>), Error> {
        let limit = page_limit(max_results)?;
        let ids = experiment_ids
            .iter()
            .map(|id| validation::experiment_id(id))
            .collect::<Result<Vec<u64>, Error>>()?;
        crate::search::search_runs(
            &self.tree()?,
            &crate::search::RunQuery {
                experiment_ids: &ids,
                view,
                filter,
                order_by,
                limit,
                page_token,
            },
        )
    }

    /// A metric's history ordered by (timestamp, step, value), exact duplicates
    /// dropped. `max_results` absent means all of it.
    pub fn metric_history(
        &self,
        run_id: &str,
        key: &str,
        max_results: Option<i64>,
        page_token: &str,
    ) -> Result<(Vec<MetricPoint>, Option<String>), Error> {
        validation::require("metric_key", key)?;
        let limit = match max_results {
            None => usize::MAX,
            Some(n) if n < 1 => {
                return Err(Error::invalid(format!(
                    "Invalid value {n} for parameter 'max_results' supplied: it must be a positive integer"
                )));
            }
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        };
        let (page, next) = super::history::page(&self.tree()?, run_id, key, limit, page_token)?;
        Ok((page.into_iter().map(|p| p.with_key(key)).collect(), next))
    }

    /// A metric's whole history as of one sequence number: exactly the points of the
    /// events up to the returned `seq` (in MLflow's order, exact duplicates dropped), so
    /// that a watch from `seq + 1` continues it with no gap and no repeat.
    pub fn metric_history_at(
        &self,
        run_id: &str,
        key: &str,
    ) -> Result<(Vec<projection::history::Point>, u64), Error> {
        validation::require("metric_key", key)?;
        let tree = self.tree()?;
        let before = self.committed_seq();
        let points = super::history::points(&tree, run_id, key)?;
        // Events written after `before` may or may not be in the read (each is written
        // with its history in one batch): the log says which points they hold.
        let mut seq = before;
        let mut recent = Vec::new();
        for ev in crate::log::replay(&tree, before + 1) {
            let ev = ev?;
            seq = ev.seq;
            if let Some(pb::event::Payload::MetricsLogged(m)) = &ev.payload
                && m.run_id == run_id
            {
                for s in m.series.iter().filter(|s| s.key == key) {
                    for ((&timestamp, &step), &value) in
                        s.timestamps.iter().zip(&s.steps).zip(&s.values)
                    {
                        recent.push(projection::history::Point {
                            timestamp,
                            step,
                            value,
                        });
                    }
                }
            }
        }
        let points = projection::history::with_recent(points, recent);
        Ok((points, seq))
    }
}

fn page_limit(max_results: Option<i64>) -> Result<usize, Error> {
    let n = max_results.unwrap_or(SEARCH_MAX_RESULTS_DEFAULT);
    if n > SEARCH_MAX_RESULTS_THRESHOLD {
        return Err(Error::invalid(format!(
            "Invalid value {n} for parameter 'max_results' supplied: it must be at most {SEARCH_MAX_RESULTS_THRESHOLD}"
        )));
    }
    if n < 1 {
        return Err(Error::invalid(format!(
            "Invalid value {n} for parameter 'max_results' supplied: it must be a positive integer"
        )));
    }
    usize::try_from(n).map_err(|_| Error::invalid("max_results out of range"))
}
