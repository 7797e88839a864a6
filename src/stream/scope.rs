//! What a watcher sees: one run, a run's subtree (including runs that join it while the
//! stream is open), an experiment, or everything; optionally only some metric keys;
//! and with `--auth`, only what the watcher may read, asked event by event, so that a
//! permission granted or revoked while the stream is open takes effect at once.

use std::collections::{HashMap, HashSet};

use crate::domain::Error;
use crate::pb::{self, event::Payload};

use super::EventSource;

#[derive(Debug, Clone)]
pub enum ScopeSpec {
    Run(String),
    Subtree(String),
    Experiment(String),
    Everything,
}

/// Which experiments a watcher may read (`--auth`).
pub struct Visibility {
    /// Admins also see users, tokens and permissions changing (their secrets cleared)
    /// and artifacts outside any run.
    pub admin: bool,
    pub may_read: Box<dyn Fn(u64) -> bool + Send + Sync>,
    /// Whether the watcher's credentials still hold (`auth::still_valid`), asked when
    /// users or tokens change: an `Err` ends the stream with it.
    pub still_valid: Box<dyn Fn() -> Result<(), Error> + Send + Sync>,
}

impl Visibility {
    /// Everything (auth off).
    pub fn all() -> Self {
        Self {
            admin: true,
            may_read: Box::new(|_| true),
            still_valid: Box::new(|| Ok(())),
        }
    }

    /// Ends the stream (`Err`) when `ev` revokes what the watcher signed in with.
    fn check(&self, ev: &pb::Event) -> Result<(), Error> {
        match ev.payload {
            Some(
                Payload::UserDeleted(_)
                | Payload::UserPasswordChanged(_)
                | Payload::UserAdminSet(_)
                | Payload::TokenRevoked(_),
            ) => (self.still_valid)(),
            _ => Ok(()),
        }
    }
}

/// What a watch session hands on for one event.
pub enum Watched {
    Metrics(pb::WatchMetricsResponse),
    /// A run created, updated, deleted, restored or moved.
    Run(pb::Event),
}

pub struct Scope {
    store: Box<dyn EventSource>,
    visibility: Visibility,
    /// The experiment of each run seen, so that an event costs one permission lookup.
    run_experiment: HashMap<String, u64>,
    spec: ScopeSpec,
    /// Subtree: the runs in it now.
    members: HashSet<String>,
    /// Experiment: whether a run belongs to it, learned as runs are seen.
    known: HashMap<String, bool>,
    keys: HashSet<String>,
}

/// The run an event is about, if any.
fn run_of(ev: &pb::Event) -> Option<&str> {
    Some(match ev.payload.as_ref()? {
        Payload::RunCreated(e) => &e.run_id,
        Payload::RunUpdated(e) => &e.run_id,
        Payload::RunDeleted(e) => &e.run_id,
        Payload::RunRestored(e) => &e.run_id,
        Payload::ParamLogged(e) => &e.run_id,
        Payload::TagSet(e) => &e.run_id,
        Payload::TagDeleted(e) => &e.run_id,
        Payload::MetricsLogged(e) => &e.run_id,
        Payload::RunReparented(e) => &e.run_id,
        Payload::InputsLogged(e) => &e.run_id,
        Payload::OutputsLogged(e) => &e.run_id,
        Payload::LoggedModelMetricsLogged(e) => &e.run_id,
        Payload::ArtifactWritten(e) if !e.run_id.is_empty() => &e.run_id,
        Payload::ArtifactDeleted(e) if !e.run_id.is_empty() => &e.run_id,
        Payload::ArtifactWritten(_)
        | Payload::ArtifactDeleted(_)
        | Payload::LoggedModelCreated(_)
        | Payload::LoggedModelFinalized(_)
        | Payload::LoggedModelTagsSet(_)
        | Payload::LoggedModelTagDeleted(_)
        | Payload::LoggedModelParamsLogged(_)
        | Payload::LoggedModelDeleted(_)
        | Payload::ExperimentCreated(_)
        | Payload::ExperimentRenamed(_)
        | Payload::ExperimentDeleted(_)
        | Payload::ExperimentRestored(_)
        | Payload::ExperimentTagSet(_)
        | Payload::ExperimentTagDeleted(_)
        | Payload::UserCreated(_)
        | Payload::UserPasswordChanged(_)
        | Payload::UserAdminSet(_)
        | Payload::UserDeleted(_)
        | Payload::TokenIssued(_)
        | Payload::TokenRevoked(_)
        | Payload::ExperimentPermissionSet(_)
        | Payload::ExperimentPermissionDeleted(_) => return None,
    })
}

/// The logged model an event is about, if any.
fn model_of(ev: &pb::Event) -> Option<&str> {
    Some(match ev.payload.as_ref()? {
        Payload::LoggedModelFinalized(e) => &e.model_id,
        Payload::LoggedModelTagsSet(e) => &e.model_id,
        Payload::LoggedModelTagDeleted(e) => &e.model_id,
        Payload::LoggedModelParamsLogged(e) => &e.model_id,
        Payload::LoggedModelDeleted(e) => &e.model_id,
        _ => return None,
    })
}

/// Whether an event is about users, tokens or permissions (admins only).
fn is_access(ev: &pb::Event) -> bool {
    matches!(
        ev.payload,
        Some(
            Payload::UserCreated(_)
                | Payload::UserPasswordChanged(_)
                | Payload::UserAdminSet(_)
                | Payload::UserDeleted(_)
                | Payload::TokenIssued(_)
                | Payload::TokenRevoked(_)
                | Payload::ExperimentPermissionSet(_)
                | Payload::ExperimentPermissionDeleted(_)
        )
    )
}

/// `ev` as it may leave the server: password and token hashes cleared.
fn without_secrets(ev: &pb::Event) -> pb::Event {
    let mut ev = ev.clone();
    match &mut ev.payload {
        Some(Payload::UserCreated(e)) => e.password_hash.clear(),
        Some(Payload::UserPasswordChanged(e)) => e.password_hash.clear(),
        Some(Payload::TokenIssued(e)) => e.secret_hash.clear(),
        _ => {}
    }
    ev
}

/// The experiment an experiment event is about.
fn experiment_of(ev: &pb::Event) -> Option<&str> {
    Some(match ev.payload.as_ref()? {
        Payload::ExperimentCreated(e) => &e.experiment_id,
        Payload::ExperimentRenamed(e) => &e.experiment_id,
        Payload::ExperimentDeleted(e) => &e.experiment_id,
        Payload::ExperimentRestored(e) => &e.experiment_id,
        Payload::ExperimentTagSet(e) => &e.experiment_id,
        Payload::ExperimentTagDeleted(e) => &e.experiment_id,
        Payload::RunCreated(e) => &e.experiment_id,
        Payload::LoggedModelCreated(e) => &e.experiment_id,
        Payload::ExperimentPermissionSet(e) => &e.experiment_id,
        Payload::ExperimentPermissionDeleted(e) => &e.experiment_id,
        _ => return None,
    })
}

impl Scope {
    /// Checks that the watched run or experiment exists and that the watcher may
    /// read it (PERMISSION_DENIED otherwise).
    pub(crate) fn new(
        store: impl EventSource,
        spec: ScopeSpec,
        keys: Vec<String>,
        visibility: Visibility,
    ) -> Result<Scope, Error> {
        let mut members = HashSet::new();
        let experiment = match &spec {
            ScopeSpec::Run(id) => Some(store.experiment_of_run(id)?),
            ScopeSpec::Subtree(id) => {
                members = store.subtree(id)?.into_iter().collect();
                Some(store.experiment_of_run(id)?)
            }
            ScopeSpec::Experiment(id) => {
                store.check_experiment(id)?;
                id.parse::<u64>().ok()
            }
            ScopeSpec::Everything => None,
        };
        if let Some(exp) = experiment
            && !(visibility.may_read)(exp)
        {
            return Err(Error::PermissionDenied(format!(
                "Permission denied: you may not read experiment {exp}."
            )));
        }
        Ok(Scope {
            store: Box::new(store),
            visibility,
            run_experiment: HashMap::new(),
            spec,
            members,
            known: HashMap::new(),
            keys: keys.into_iter().collect(),
        })
    }

    /// Follows the hierarchy: runs created under or moved into the subtree join it,
    /// runs moved out leave it.
    fn observe(&mut self, ev: &pb::Event) -> Result<(), Error> {
        let ScopeSpec::Subtree(top) = &self.spec else {
            return Ok(());
        };
        match ev.payload.as_ref() {
            Some(Payload::RunCreated(e)) if self.members.contains(&e.parent_run_id) => {
                self.members.insert(e.run_id.clone());
            }
            Some(Payload::RunReparented(e)) if &e.run_id != top => {
                let moved = self.store.subtree(&e.run_id)?;
                if self.members.contains(&e.new_parent_run_id) {
                    self.members.extend(moved);
                } else if self.members.contains(&e.run_id) {
                    for r in moved {
                        self.members.remove(&r);
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Whether the watcher may read the run's experiment now.
    fn may_read_run(&mut self, run_id: &str) -> Result<bool, Error> {
        if self.visibility.admin {
            return Ok(true);
        }
        let exp = match self.run_experiment.get(run_id) {
            Some(&e) => e,
            None => match self.store.experiment_of_run(run_id) {
                Ok(e) => {
                    self.run_experiment.insert(run_id.to_string(), e);
                    e
                }
                Err(Error::NotFound(_)) => return Ok(false),
                Err(e) => return Err(e),
            },
        };
        Ok((self.visibility.may_read)(exp))
    }

    /// Whether the watcher may read the event at all.
    fn may_see(&mut self, ev: &pb::Event) -> Result<bool, Error> {
        if self.visibility.admin {
            return Ok(true);
        }
        if is_access(ev) {
            return Ok(false);
        }
        if let Some(exp) = experiment_of(ev) {
            return Ok(exp.parse().is_ok_and(|n| (self.visibility.may_read)(n)));
        }
        if let Some(run) = run_of(ev) {
            return self.may_read_run(run);
        }
        if let Some(model) = model_of(ev) {
            return match self.store.experiment_of_model(model) {
                Ok(exp) => Ok((self.visibility.may_read)(exp)),
                Err(Error::NotFound(_)) => Ok(false),
                Err(e) => Err(e),
            };
        }
        // Artifacts outside any run.
        Ok(false)
    }

    fn has_run(&mut self, run_id: &str) -> Result<bool, Error> {
        Ok(match &self.spec {
            ScopeSpec::Run(id) => id == run_id,
            ScopeSpec::Subtree(_) => self.members.contains(run_id),
            ScopeSpec::Everything => true,
            ScopeSpec::Experiment(exp) => match self.known.get(run_id) {
                Some(&yes) => yes,
                None => {
                    let yes = match self.store.experiment_of_run(run_id) {
                        Ok(id) => id.to_string() == *exp,
                        Err(Error::NotFound(_)) => false,
                        Err(e) => return Err(e),
                    };
                    self.known.insert(run_id.to_string(), yes);
                    yes
                }
            },
        })
    }

    /// The points of `ev` in scope, as one message.
    pub fn metrics(&mut self, ev: &pb::Event) -> Result<Option<pb::WatchMetricsResponse>, Error> {
        Ok(match self.watched(ev, false)? {
            Some(Watched::Metrics(m)) => Some(m),
            _ => None,
        })
    }

    /// The points of `ev` in scope, or with `runs`, `ev` itself when it creates,
    /// updates, deletes, restores or moves a run in scope (what a live page needs to keep
    /// its tree current).
    pub fn watched(&mut self, ev: &pb::Event, runs: bool) -> Result<Option<Watched>, Error> {
        self.visibility.check(ev)?;
        self.observe(ev)?;
        if let (ScopeSpec::Experiment(exp), Some(Payload::RunCreated(e))) =
            (&self.spec, &ev.payload)
        {
            self.known.insert(e.run_id.clone(), e.experiment_id == *exp);
        }
        let run = match &ev.payload {
            Some(Payload::MetricsLogged(m)) => &m.run_id,
            Some(
                Payload::RunCreated(pb::RunCreated { run_id, .. })
                | Payload::RunUpdated(pb::RunUpdated { run_id, .. })
                | Payload::RunDeleted(pb::RunDeleted { run_id })
                | Payload::RunRestored(pb::RunRestored { run_id })
                | Payload::RunReparented(pb::RunReparented { run_id, .. }),
            ) if runs => run_id,
            _ => return Ok(None),
        };
        if !self.has_run(run)? || !self.may_read_run(run)? {
            return Ok(None);
        }
        let Some(Payload::MetricsLogged(m)) = &ev.payload else {
            return Ok(Some(Watched::Run(ev.clone())));
        };
        let series: Vec<pb::MetricSeries> = m
            .series
            .iter()
            .filter(|s| self.keys.is_empty() || self.keys.contains(&s.key))
            .cloned()
            .collect();
        Ok((!series.is_empty()).then(|| {
            Watched::Metrics(pb::WatchMetricsResponse {
                seq: ev.seq,
                run_id: m.run_id.clone(),
                series,
            })
        }))
    }

    /// `ev` itself if it is in scope (the change feed).
    pub fn event(&mut self, ev: &pb::Event) -> Result<Option<pb::Event>, Error> {
        self.visibility.check(ev)?;
        if !self.may_see(ev)? {
            return Ok(None);
        }
        let ScopeSpec::Experiment(exp) = &self.spec else {
            return Ok(Some(without_secrets(ev)));
        };
        if let Some(e) = experiment_of(ev) {
            let yes = e == exp;
            if let Some(Payload::RunCreated(r)) = &ev.payload {
                self.known.insert(r.run_id.clone(), yes);
            }
            return Ok(yes.then(|| without_secrets(ev)));
        }
        match run_of(ev) {
            Some(run) if self.has_run(run)? => Ok(Some(ev.clone())),
            _ => Ok(None),
        }
    }
}
