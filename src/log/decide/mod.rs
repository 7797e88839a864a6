//! Deciding what a command means: each command is validated against the current state
//! (the pending state of its group, so it sees the commands before it) and becomes the
//! events that record it, or an error that writes nothing. Deciding is pure: it reads
//! through `Kv` and returns events; the committer assigns sequence numbers, projects
//! and writes. One file per kind of thing a command changes.

mod access;
mod artifacts;
mod batch;
mod experiments;
mod inputs;
mod models;
mod runs;

use crate::db::kv::Pending;
use crate::domain::{Command, Error};
use crate::pb::event::Payload;

/// What to hand back once a command's events are projected.
pub(crate) enum Answer {
    Experiment(u64),
    Run(String),
    ChildRun(String, bool),
    LoggedModel(String),
    Done,
}

/// A command's events and what to answer, or why it is refused.
pub(crate) type Decision = Result<(Vec<Payload>, Answer), Error>;

/// Events that answer nothing but success.
fn done(events: Vec<Payload>) -> Decision {
    Ok((events, Answer::Done))
}

/// Validates a command against the state and returns the events it makes; `now` is
/// the group's commit time (epoch milliseconds), `actor` who asked (empty: nobody in
/// particular, auth off). Whether the actor may ask was checked before (`auth::Access`);
/// here the actor only shapes what is recorded: the creator of an experiment manages it.
pub(crate) fn decide(command: &Command, kv: &Pending, now: i64, actor: &str) -> Decision {
    match command {
        Command::CreateExperiment {
            name,
            artifact_location,
            tags,
        } => {
            let (mut events, answer) = experiments::create(kv, name, artifact_location, tags)?;
            if let (Answer::Experiment(id), false) = (&answer, actor.is_empty()) {
                events.push(access::creator_grant(*id, actor));
            }
            Ok((events, answer))
        }
        Command::RenameExperiment {
            experiment_id,
            new_name,
        } => experiments::rename(kv, experiment_id, new_name),
        Command::DeleteExperiment { experiment_id } => experiments::delete(kv, experiment_id),
        Command::RestoreExperiment { experiment_id } => experiments::restore(kv, experiment_id),
        Command::SetExperimentTag {
            experiment_id,
            key,
            value,
        } => experiments::set_tag(kv, experiment_id, key, value),
        Command::DeleteExperimentTag { experiment_id, key } => {
            experiments::delete_tag(kv, experiment_id, key)
        }
        Command::CreateRun {
            experiment_id,
            user_id,
            run_name,
            start_time,
            tags,
        } => runs::create(
            kv,
            None,
            experiment_id,
            user_id,
            run_name,
            *start_time,
            tags,
            now,
        ),
        Command::ImportRun {
            run_id,
            experiment_id,
            user_id,
            run_name,
            start_time,
            tags,
        } => runs::create(
            kv,
            Some(run_id),
            experiment_id,
            user_id,
            run_name,
            *start_time,
            tags,
            now,
        ),
        Command::ImportExperiment {
            name,
            tags,
            creation_time,
            last_update_time,
        } => experiments::import(kv, name, tags, *creation_time, *last_update_time),
        Command::ImportLoggedModel {
            model_id,
            experiment_id,
            name,
            model_type,
            source_run_id,
            params,
            tags,
            metrics,
        } => {
            let (mut events, answer) = models::create(
                kv,
                Some(model_id),
                experiment_id,
                name,
                model_type,
                source_run_id,
                params,
                tags,
            )?;
            // Only with the model's creation: an existing model has its points.
            if !events.is_empty() {
                events.extend(models::imported_metrics(model_id, metrics));
            }
            Ok((events, answer))
        }
        Command::UpdateRun {
            run_id,
            status,
            end_time,
            run_name,
        } => runs::update(kv, run_id, status, end_time, run_name),
        Command::DeleteRun { run_id, cascade } => {
            done(runs::lifecycle_events(kv, run_id, *cascade, true)?)
        }
        Command::RestoreRun { run_id, cascade } => {
            done(runs::lifecycle_events(kv, run_id, *cascade, false)?)
        }
        Command::GetOrCreateChildRun {
            parent_run_id,
            run_name,
            user_id,
            start_time,
            tags,
        } => runs::get_or_create_child(kv, parent_run_id, run_name, user_id, start_time, tags, now),
        Command::LogBatch {
            run_id,
            metrics,
            params,
            tags,
            origin,
            model_metrics,
        } => done(batch::log_batch(
            kv,
            run_id,
            metrics,
            params,
            tags,
            *origin,
            model_metrics,
        )?),
        Command::DeleteTag { run_id, key } => runs::delete_tag(kv, run_id, key),
        Command::LogInputs {
            run_id,
            datasets,
            models,
        } => inputs::log_inputs(kv, run_id, datasets, models),
        Command::LogOutputs { run_id, models } => inputs::log_outputs(kv, run_id, models),
        Command::AppendModelHistory { run_id, model_json } => {
            inputs::append_model_history(kv, run_id, model_json)
        }
        Command::RecordArtifact {
            path,
            size,
            deleted,
        } => artifacts::record(kv, path, size, deleted),
        Command::CreateLoggedModel {
            experiment_id,
            name,
            model_type,
            source_run_id,
            params,
            tags,
        } => models::create(
            kv,
            None,
            experiment_id,
            name,
            model_type,
            source_run_id,
            params,
            tags,
        ),
        Command::FinalizeLoggedModel {
            model_id,
            status,
            status_message,
        } => models::finalize(kv, model_id, status, status_message),
        Command::SetLoggedModelTags { model_id, tags } => models::set_tags(kv, model_id, tags),
        Command::DeleteLoggedModelTag { model_id, key } => models::delete_tag(kv, model_id, key),
        Command::LogLoggedModelParams { model_id, params } => {
            models::log_params(kv, model_id, params)
        }
        Command::DeleteLoggedModel { model_id } => models::delete(kv, model_id),
        Command::CreateUser {
            username,
            password_hash,
            is_admin,
        } => access::create_user(kv, username, password_hash, *is_admin),
        Command::ChangePassword {
            username,
            password_hash,
        } => access::change_password(kv, username, password_hash),
        Command::SetAdmin { username, is_admin } => access::set_admin(kv, username, *is_admin),
        Command::DeleteUser { username } => access::delete_user(kv, username),
        Command::IssueToken {
            token_id,
            username,
            secret_hash,
            expires_at,
            description,
        } => access::issue_token(
            kv,
            token_id,
            username,
            secret_hash,
            *expires_at,
            description,
        ),
        Command::RevokeToken { token_id } => access::revoke_token(kv, token_id),
        Command::SetExperimentPermission {
            experiment_id,
            username,
            permission,
            mode,
        } => access::set_permission(kv, experiment_id, username, *permission, *mode),
        Command::DeleteExperimentPermission {
            experiment_id,
            username,
        } => access::delete_permission(kv, experiment_id, username),
    }
}
