//! The writes every surface shares, one typed method each: gRPC and MLflow REST call
//! these instead of building commands, so a write means the same thing on every
//! surface. Each returns once its events are durable. Which `Outcome` a command
//! answers is decided here, in one place.

use super::{Outcome, Store};
use crate::domain::{
    BatchOrigin, Command, DatasetInput, Error, KeyValue, MetricPoint, ModelMetric, ModelRef,
    RunStatus,
};
use crate::projection::{LoggedModelRecord, RunRecord};

/// What `create_run` (and `get_or_create_child_run`) needs.
#[derive(Debug, Clone, Default)]
pub struct NewRun {
    /// Empty: the Default experiment.
    pub experiment_id: String,
    pub user_id: String,
    /// Empty: from the `mlflow.runName` tag, or a random name.
    pub run_name: String,
    /// Absent: now.
    pub start_time: Option<i64>,
    pub tags: Vec<KeyValue>,
}

/// What `create_logged_model` needs.
#[derive(Debug, Clone, Default)]
pub struct NewLoggedModel {
    pub experiment_id: String,
    /// Empty: a random name.
    pub name: String,
    pub model_type: String,
    pub source_run_id: String,
    pub params: Vec<KeyValue>,
    pub tags: Vec<KeyValue>,
}

/// An artifact location as MLflow's server stores it: a relative local path (no scheme,
/// or `file:`) becomes absolute against the server's working directory; anything else,
/// absolute paths and remote URIs, stays as given.
fn resolve_local(location: String) -> String {
    let (scheme, path) = match location.strip_prefix("file:") {
        Some(rest) => ("file://", rest),
        None if location.contains("://") || location.is_empty() => return location,
        None => ("", location.as_str()),
    };
    let relative = std::path::Path::new(path);
    if relative.is_absolute() {
        return location;
    }
    let Ok(cwd) = std::env::current_dir() else {
        return location;
    };
    // `components` drops `.` segments, as Python's pathlib does when MLflow joins them.
    let absolute: std::path::PathBuf = cwd
        .components()
        .chain(relative.components())
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect();
    format!("{scheme}{}", absolute.display())
}

/// The outcome a command promised was not the one it gave: a bug, reported as such.
fn mismatch(what: &str, got: &Outcome) -> Error {
    Error::Corrupt(format!("expected {what}, the committer answered {got:?}"))
}

fn run(outcome: Outcome) -> Result<RunRecord, Error> {
    match outcome {
        Outcome::Run(r) => Ok(*r),
        other => Err(mismatch("a run", &other)),
    }
}

fn logged_model(outcome: Outcome) -> Result<LoggedModelRecord, Error> {
    match outcome {
        Outcome::LoggedModel(m) => Ok(*m),
        other => Err(mismatch("a logged model", &other)),
    }
}

impl Store {
    async fn apply(&self, command: Command) -> Result<(), Error> {
        self.submit(command).await.map(|_| ())
    }

    /// Creates an experiment and returns its id.
    pub async fn create_experiment(
        &self,
        name: String,
        artifact_location: String,
        tags: Vec<KeyValue>,
    ) -> Result<String, Error> {
        let outcome = self
            .submit(Command::CreateExperiment {
                name,
                artifact_location: resolve_local(artifact_location),
                tags,
            })
            .await?;
        match outcome {
            Outcome::ExperimentCreated(id) => Ok(id),
            other => Err(mismatch("an experiment id", &other)),
        }
    }

    pub async fn rename_experiment(
        &self,
        experiment_id: String,
        new_name: String,
    ) -> Result<(), Error> {
        self.apply(Command::RenameExperiment {
            experiment_id,
            new_name,
        })
        .await
    }

    pub async fn delete_experiment(&self, experiment_id: String) -> Result<(), Error> {
        self.apply(Command::DeleteExperiment { experiment_id })
            .await
    }

    pub async fn restore_experiment(&self, experiment_id: String) -> Result<(), Error> {
        self.apply(Command::RestoreExperiment { experiment_id })
            .await
    }

    pub async fn set_experiment_tag(
        &self,
        experiment_id: String,
        key: String,
        value: String,
    ) -> Result<(), Error> {
        self.apply(Command::SetExperimentTag {
            experiment_id,
            key,
            value,
        })
        .await
    }

    pub async fn delete_experiment_tag(
        &self,
        experiment_id: String,
        key: String,
    ) -> Result<(), Error> {
        self.apply(Command::DeleteExperimentTag { experiment_id, key })
            .await
    }

    pub async fn create_run(&self, new: NewRun) -> Result<RunRecord, Error> {
        run(self
            .submit(Command::CreateRun {
                experiment_id: new.experiment_id,
                user_id: new.user_id,
                run_name: new.run_name,
                start_time: new.start_time,
                tags: new.tags,
            })
            .await?)
    }

    /// Sets what is given of status, end time and name; returns the run as it is now.
    pub async fn update_run(
        &self,
        run_id: String,
        status: Option<RunStatus>,
        end_time: Option<i64>,
        run_name: Option<String>,
    ) -> Result<RunRecord, Error> {
        run(self
            .submit(Command::UpdateRun {
                run_id,
                status,
                end_time,
                run_name,
            })
            .await?)
    }

    /// Deletes the run, and with `cascade` every run below it.
    pub async fn delete_run(&self, run_id: String, cascade: bool) -> Result<(), Error> {
        self.apply(Command::DeleteRun { run_id, cascade }).await
    }

    /// Restores the run, and with `cascade` every run below it.
    pub async fn restore_run(&self, run_id: String, cascade: bool) -> Result<(), Error> {
        self.apply(Command::RestoreRun { run_id, cascade }).await
    }

    /// The parent's active child named `new.run_name`, created if there is none (the
    /// experiment is the parent's); `true` when this call created it.
    pub async fn get_or_create_child_run(
        &self,
        parent_run_id: String,
        new: NewRun,
    ) -> Result<(RunRecord, bool), Error> {
        let outcome = self
            .submit(Command::GetOrCreateChildRun {
                parent_run_id,
                run_name: new.run_name,
                user_id: new.user_id,
                start_time: new.start_time,
                tags: new.tags,
            })
            .await?;
        match outcome {
            Outcome::ChildRun(r, created) => Ok((*r, created)),
            other => Err(mismatch("a child run", &other)),
        }
    }

    /// MLflow's `LogBatch`: metrics, params and tags at once, all or nothing, with the
    /// batch's limits and messages (`metrics[3].value`). `model_metrics` are points of
    /// `metrics` that are logged for a logged model too.
    pub async fn log_batch(
        &self,
        run_id: String,
        metrics: Vec<MetricPoint>,
        params: Vec<KeyValue>,
        tags: Vec<KeyValue>,
        model_metrics: Vec<ModelMetric>,
    ) -> Result<(), Error> {
        self.apply(Command::LogBatch {
            run_id,
            metrics,
            params,
            tags,
            origin: BatchOrigin::Batch,
            model_metrics,
        })
        .await
    }

    /// One metric point (MLflow's `LogMetric`), also for a logged model when `model` says.
    pub async fn log_metric(
        &self,
        run_id: String,
        point: MetricPoint,
        model: Option<ModelRef>,
    ) -> Result<(), Error> {
        let model_metrics = model
            .map(|model| ModelMetric {
                model,
                point: point.clone(),
            })
            .into_iter()
            .collect();
        self.apply(Command::LogBatch {
            run_id,
            metrics: vec![point],
            params: vec![],
            tags: vec![],
            origin: BatchOrigin::Single,
            model_metrics,
        })
        .await
    }

    /// One param (MLflow's `LogParam`): a param never changes once logged.
    pub async fn log_param(&self, run_id: String, param: KeyValue) -> Result<(), Error> {
        self.single(run_id, vec![param], vec![]).await
    }

    /// One tag (MLflow's `SetTag`); `mlflow.parentRunId` moves the run in the tree.
    pub async fn set_tag(&self, run_id: String, tag: KeyValue) -> Result<(), Error> {
        self.single(run_id, vec![], vec![tag]).await
    }

    /// Queues a `LogBatch` of metrics and returns at once with a future of its outcome,
    /// so that a stream can keep several batches in flight (committed in order).
    pub(crate) async fn enqueue_metrics(
        &self,
        run_id: String,
        metrics: Vec<MetricPoint>,
    ) -> Result<impl std::future::Future<Output = Result<(), Error>> + Send + use<>, Error> {
        let answer = self
            .enqueue(Command::LogBatch {
                run_id,
                metrics,
                params: vec![],
                tags: vec![],
                origin: BatchOrigin::Batch,
                model_metrics: vec![],
            })
            .await?;
        Ok(async move { answer.await.map(|_| ()) })
    }

    async fn single(
        &self,
        run_id: String,
        params: Vec<KeyValue>,
        tags: Vec<KeyValue>,
    ) -> Result<(), Error> {
        self.apply(Command::LogBatch {
            run_id,
            metrics: vec![],
            params,
            tags,
            origin: BatchOrigin::Single,
            model_metrics: vec![],
        })
        .await
    }

    pub async fn delete_tag(&self, run_id: String, key: String) -> Result<(), Error> {
        self.apply(Command::DeleteTag { run_id, key }).await
    }

    /// Datasets (with their input tags) and logged models the run used.
    pub async fn log_inputs(
        &self,
        run_id: String,
        datasets: Vec<DatasetInput>,
        models: Vec<String>,
    ) -> Result<(), Error> {
        self.apply(Command::LogInputs {
            run_id,
            datasets,
            models,
        })
        .await
    }

    /// Logged models the run produced, with the step of each.
    pub async fn log_outputs(
        &self,
        run_id: String,
        models: Vec<(String, i64)>,
    ) -> Result<(), Error> {
        self.apply(Command::LogOutputs { run_id, models }).await
    }

    /// MLflow's legacy `LogModel`: appends to the run's model history tag.
    pub async fn append_model_history(
        &self,
        run_id: String,
        model_json: String,
    ) -> Result<(), Error> {
        self.apply(Command::AppendModelHistory { run_id, model_json })
            .await
    }

    /// Records in the log that a file was stored (or removed) at `path` under the
    /// artifact root.
    pub async fn record_artifact(
        &self,
        path: String,
        size: u64,
        deleted: bool,
    ) -> Result<(), Error> {
        self.apply(Command::RecordArtifact {
            path,
            size,
            deleted,
        })
        .await
    }

    pub async fn create_logged_model(
        &self,
        new: NewLoggedModel,
    ) -> Result<LoggedModelRecord, Error> {
        logged_model(
            self.submit(Command::CreateLoggedModel {
                experiment_id: new.experiment_id,
                name: new.name,
                model_type: new.model_type,
                source_run_id: new.source_run_id,
                params: new.params,
                tags: new.tags,
            })
            .await?,
        )
    }

    /// Sets a logged model's upload status.
    pub async fn finalize_logged_model(
        &self,
        model_id: String,
        status: i32,
        status_message: String,
    ) -> Result<LoggedModelRecord, Error> {
        logged_model(
            self.submit(Command::FinalizeLoggedModel {
                model_id,
                status,
                status_message,
            })
            .await?,
        )
    }

    pub async fn set_logged_model_tags(
        &self,
        model_id: String,
        tags: Vec<KeyValue>,
    ) -> Result<LoggedModelRecord, Error> {
        logged_model(
            self.submit(Command::SetLoggedModelTags { model_id, tags })
                .await?,
        )
    }

    pub async fn delete_logged_model_tag(
        &self,
        model_id: String,
        key: String,
    ) -> Result<(), Error> {
        self.apply(Command::DeleteLoggedModelTag { model_id, key })
            .await
    }

    pub async fn log_logged_model_params(
        &self,
        model_id: String,
        params: Vec<KeyValue>,
    ) -> Result<(), Error> {
        self.apply(Command::LogLoggedModelParams { model_id, params })
            .await
    }

    pub async fn delete_logged_model(&self, model_id: String) -> Result<(), Error> {
        self.apply(Command::DeleteLoggedModel { model_id }).await
    }
}

/// Users, tokens and permissions (`--auth`). Secrets arrive hashed (`auth::hash_password`,
/// `auth::Token`).
impl Store {
    pub async fn create_user(
        &self,
        username: String,
        password_hash: String,
        is_admin: bool,
    ) -> Result<(), Error> {
        self.apply(Command::CreateUser {
            username,
            password_hash,
            is_admin,
        })
        .await
    }

    pub async fn change_password(
        &self,
        username: String,
        password_hash: String,
    ) -> Result<(), Error> {
        self.apply(Command::ChangePassword {
            username,
            password_hash,
        })
        .await
    }

    pub async fn set_admin(&self, username: String, is_admin: bool) -> Result<(), Error> {
        self.apply(Command::SetAdmin { username, is_admin }).await
    }

    pub async fn delete_user(&self, username: String) -> Result<(), Error> {
        self.apply(Command::DeleteUser { username }).await
    }

    pub async fn issue_token(
        &self,
        token_id: String,
        username: String,
        secret_hash: String,
        expires_at: i64,
        description: String,
    ) -> Result<(), Error> {
        self.apply(Command::IssueToken {
            token_id,
            username,
            secret_hash,
            expires_at,
            description,
        })
        .await
    }

    pub async fn revoke_token(&self, token_id: String) -> Result<(), Error> {
        self.apply(Command::RevokeToken { token_id }).await
    }

    pub async fn set_experiment_permission(
        &self,
        experiment_id: String,
        username: String,
        permission: crate::domain::access::Permission,
        mode: crate::domain::access::GrantMode,
    ) -> Result<(), Error> {
        self.apply(Command::SetExperimentPermission {
            experiment_id,
            username,
            permission,
            mode,
        })
        .await
    }

    pub async fn delete_experiment_permission(
        &self,
        experiment_id: String,
        username: String,
    ) -> Result<(), Error> {
        self.apply(Command::DeleteExperimentPermission {
            experiment_id,
            username,
        })
        .await
    }
}

/// An import (`arbor import`): experiments, runs and logged models keep the source's
/// names, ids and times; everything else comes through the usual writes.
impl Store {
    /// The experiment named `name`, or a new one with these tags and times; its id.
    pub async fn import_experiment(
        &self,
        name: String,
        tags: Vec<KeyValue>,
        creation_time: i64,
        last_update_time: i64,
    ) -> Result<String, Error> {
        match self
            .submit(Command::ImportExperiment {
                name,
                tags,
                creation_time,
                last_update_time,
            })
            .await?
        {
            Outcome::ExperimentCreated(id) => Ok(id),
            other => Err(mismatch("an experiment", &other)),
        }
    }

    /// The run of this id, created (with `new`'s experiment, name, user, start time and
    /// tags) if there was none; `true` when this call created it.
    pub async fn import_run(
        &self,
        run_id: String,
        new: NewRun,
    ) -> Result<(RunRecord, bool), Error> {
        match self
            .submit(Command::ImportRun {
                run_id,
                experiment_id: new.experiment_id,
                user_id: new.user_id,
                run_name: new.run_name,
                start_time: new.start_time,
                tags: new.tags,
            })
            .await?
        {
            Outcome::ChildRun(run, created) => Ok((*run, created)),
            other => Err(mismatch("a run", &other)),
        }
    }

    /// The logged model of this id, created from `new` (with the points `metrics` its
    /// runs logged for it) if there was none.
    pub async fn import_logged_model(
        &self,
        model_id: String,
        new: NewLoggedModel,
        metrics: Vec<(String, crate::domain::ModelMetric)>,
    ) -> Result<LoggedModelRecord, Error> {
        logged_model(
            self.submit(Command::ImportLoggedModel {
                model_id,
                experiment_id: new.experiment_id,
                name: new.name,
                model_type: new.model_type,
                source_run_id: new.source_run_id,
                params: new.params,
                tags: new.tags,
                metrics,
            })
            .await?,
        )
    }
}
