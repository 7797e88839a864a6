//! Authorization: what a caller may do. `Access` is the store as one caller sees it: it
//! hands out the `Store` only after a check names what the call needs on which
//! experiment (`on_run(id, Need::Update)?.log_batch(..)`), so no API handler can reach
//! the data without saying why it may. Runs, metrics, artifacts, logged models and
//! datasets follow their experiment. Writes through it are recorded as the caller's.

use crate::domain::Error;
use crate::domain::access::Permission;
use crate::domain::{KeyValue, TAG_PARENT_RUN_ID};
use crate::projection::{ExperimentRecord, RunRecord};
use crate::store::Store;

use super::Caller;

/// What a call needs on an experiment, MLflow's `can_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Read,
    /// Create runs, log, tag, rename: EDIT.
    Update,
    /// Delete and restore: MANAGE.
    Delete,
    /// Grant and revoke permissions: MANAGE.
    Manage,
}

impl Need {
    fn met_by(self, p: Permission) -> bool {
        match self {
            Need::Read => p.can_read(),
            Need::Update => p.can_update(),
            Need::Delete => p.can_delete(),
            Need::Manage => p.can_manage(),
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Need::Read => "read",
            Need::Update => "edit",
            Need::Delete => "delete in",
            Need::Manage => "manage permissions of",
        }
    }
}

/// PERMISSION_DENIED, counted in `arbor_auth_failures{reason="forbidden"}`.
fn forbidden(message: String) -> Error {
    crate::metrics::global()
        .auth_failures
        .get_or_create(&[("reason", "forbidden".to_string())])
        .inc();
    Error::PermissionDenied(message)
}

/// The store as one caller may use it.
#[derive(Clone)]
pub struct Access {
    /// Acting as the caller (`Store::acting_as`).
    store: Store,
    caller: Caller,
}

impl Access {
    pub fn new(store: &Store, caller: Caller) -> Access {
        Access {
            store: store.acting_as(caller.actor()),
            caller,
        }
    }

    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    /// The caller's permission on an experiment: admins (and everyone with auth off)
    /// manage everything; others have their grant, or the default.
    pub fn permission(&self, experiment_id: u64) -> Result<Permission, Error> {
        match &self.caller {
            Caller::Anyone => Ok(Permission::Manage),
            Caller::User(u) if u.admin => Ok(Permission::Manage),
            Caller::User(u) => Ok(self
                .store
                .grant(experiment_id, &u.name)?
                .unwrap_or(u.default_permission)),
        }
    }

    fn require(&self, experiment_id: u64, need: Need) -> Result<(), Error> {
        if matches!(self.caller, Caller::Anyone) {
            return Ok(());
        }
        if need.met_by(self.permission(experiment_id)?) {
            return Ok(());
        }
        Err(forbidden(format!(
            "Permission denied: {} may not {} experiment {experiment_id}.",
            self.caller.actor().unwrap_or_default(),
            need.verb()
        )))
    }

    /// Whether the caller may read the experiment (for filtering lists and streams).
    pub fn can_read(&self, experiment_id: u64) -> bool {
        self.require(experiment_id, Need::Read).is_ok()
    }

    /// Whether a tree answer may show the caller this run (`hierarchy::Visible`).
    pub fn sees(&self, run: &RunRecord) -> bool {
        matches!(self.caller, Caller::Anyone) || self.can_read(run.experiment_id)
    }

    /// Checks the `mlflow.parentRunId` among `tags`: with auth on, a run goes under a
    /// parent only if the caller may read the parent's experiment, so no one can hang
    /// their run under a stranger's and learn of the stranger's tree through it. (A
    /// parent that does not exist makes the run a root, as in MLflow: nothing to
    /// protect.) With auth off, any parent, as in MLflow.
    pub fn adopting<'t>(
        &self,
        tags: impl IntoIterator<Item = &'t KeyValue>,
    ) -> Result<&Self, Error> {
        if matches!(self.caller, Caller::Anyone) {
            return Ok(self);
        }
        for t in tags {
            if t.key != TAG_PARENT_RUN_ID || t.value.is_empty() {
                continue;
            }
            let parent = match self.store.get_run(&t.value) {
                Ok(parent) => parent,
                Err(Error::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            if !Need::Read.met_by(self.permission(parent.experiment_id)?) {
                return Err(forbidden(format!(
                    "Permission denied: {} may not read run {}, so it cannot be made a parent.",
                    self.caller.actor().unwrap_or_default(),
                    t.value
                )));
            }
        }
        Ok(self)
    }

    /// Anything any authenticated caller may do: create an experiment (and so manage
    /// it), read the server's version.
    pub fn any(&self) -> &Store {
        &self.store
    }

    /// The store, if the caller is an admin (users, tokens, backups).
    pub fn admin(&self) -> Result<&Store, Error> {
        if self.caller.is_admin() {
            Ok(&self.store)
        } else {
            Err(forbidden(format!(
                "Permission denied: {} is not an admin.",
                self.caller.actor().unwrap_or_default()
            )))
        }
    }

    /// The store, once the caller may `need` on the experiment `id` (by id text;
    /// NotFound for a missing experiment is the store's to say, after the check).
    pub fn on_experiment(&self, id: &str, need: Need) -> Result<&Store, Error> {
        if matches!(self.caller, Caller::Anyone) {
            return Ok(&self.store);
        }
        let n = crate::domain::validation::experiment_id(id)?;
        self.require(n, need)?;
        Ok(&self.store)
    }

    /// `on_experiment` for each of `ids`.
    pub fn on_experiments(&self, ids: &[String], need: Need) -> Result<&Store, Error> {
        for id in ids {
            self.on_experiment(id, need)?;
        }
        Ok(&self.store)
    }

    /// The store, once the caller may `need` on the experiment named `name`.
    pub fn on_experiment_named(&self, name: &str, need: Need) -> Result<&Store, Error> {
        if matches!(self.caller, Caller::Anyone) {
            return Ok(&self.store);
        }
        let e = self.store.get_experiment_by_name(name)?;
        self.require(e.id, need)?;
        Ok(&self.store)
    }

    /// The store, once the caller may `need` on the run's experiment.
    pub fn on_run(&self, run_id: &str, need: Need) -> Result<&Store, Error> {
        if matches!(self.caller, Caller::Anyone) {
            return Ok(&self.store);
        }
        let run = self.store.get_run(run_id)?;
        self.require(run.experiment_id, need)?;
        Ok(&self.store)
    }

    /// `on_run` for each of `run_ids`.
    pub fn on_runs(&self, run_ids: &[String], need: Need) -> Result<&Store, Error> {
        for id in run_ids {
            self.on_run(id, need)?;
        }
        Ok(&self.store)
    }

    /// The store, once the caller may `need` on the logged model's experiment.
    pub fn on_logged_model(&self, model_id: &str, need: Need) -> Result<&Store, Error> {
        if matches!(self.caller, Caller::Anyone) {
            return Ok(&self.store);
        }
        let m = self.store.get_logged_model(model_id, true)?;
        self.require(m.experiment_id, need)?;
        Ok(&self.store)
    }

    /// The store (and its artifact files), once the caller may `need` on the experiment a path belongs
    /// to: artifact paths start with the experiment id (`<experiment>/<run>/artifacts/..`,
    /// MLflow's layout for `mlflow-artifacts:/<experiment>`). Paths outside any
    /// experiment (the root, custom locations) are for admins.
    pub fn on_artifact_path(&self, path: &str, need: Need) -> Result<&Store, Error> {
        if matches!(self.caller, Caller::Anyone) {
            return Ok(&self.store);
        }
        let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
        match first.parse::<u64>() {
            Ok(id) => self.require(id, need)?,
            Err(_) => {
                self.admin()?;
            }
        }
        Ok(&self.store)
    }

    /// What a watch stream reads (the log, the tree) and what it may show this caller:
    /// streams check each event against the caller's permissions as it goes by.
    pub fn watch(&self) -> (&Store, crate::stream::scope::Visibility) {
        let me = self.clone();
        let store = self.store.clone();
        let caller = self.caller.clone();
        let visibility = crate::stream::scope::Visibility {
            admin: self.caller.is_admin(),
            may_read: Box::new(move |id| me.can_read(id)),
            still_valid: Box::new(move || match &caller {
                Caller::Anyone => Ok(()),
                Caller::User(user) => super::still_valid(&store, user),
            }),
        };
        (&self.store, visibility)
    }

    /// Experiments matching a filter that the caller may read, a page at a time (pages
    /// are counted over readable experiments only, so none come short).
    pub fn search_experiments(
        &self,
        view: crate::domain::ViewType,
        filter: &str,
        order_by: &[String],
        max_results: Option<i64>,
        page_token: &str,
    ) -> Result<(Vec<ExperimentRecord>, Option<String>), Error> {
        self.store.search_experiments_where(
            view,
            filter,
            order_by,
            max_results,
            page_token,
            &|id| self.can_read(id),
        )
    }
}
