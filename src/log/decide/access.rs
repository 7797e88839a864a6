//! Users, tokens and experiment permissions (`--auth`). Secrets arrive hashed; deciding
//! checks names, existence and MLflow's create-versus-update rules.

use crate::db::kv::Pending;
use crate::domain::Error;
use crate::domain::access::{self, GrantMode, Permission};
use crate::pb::{self, event::Payload};
use crate::projection::access::{load_token, load_user};
use crate::projection::find_experiment;

use super::{Decision, done};
use crate::domain::commands as c;

fn user_not_found(name: &str) -> Error {
    Error::NotFound(format!("User with username={name} not found"))
}

fn existing_user(kv: &Pending, name: &str) -> Result<(), Error> {
    access::username(name)?;
    load_user(kv, name)?
        .map(|_| ())
        .ok_or_else(|| user_not_found(name))
}

fn password_hash(hash: &str) -> Result<(), Error> {
    if hash.starts_with("$argon2") {
        Ok(())
    } else {
        Err(Error::invalid(
            "the password hash is not an Argon2 PHC string",
        ))
    }
}

pub(super) fn create_user(kv: &Pending, name: &str, hash: &str, is_admin: bool) -> Decision {
    access::username(name)?;
    password_hash(hash)?;
    if load_user(kv, name)?.is_some() {
        return Err(Error::AlreadyExists(format!(
            "User (username={name}) already exists."
        )));
    }
    done(vec![Payload::UserCreated(pb::UserCreated {
        username: name.to_string(),
        password_hash: hash.to_string(),
        is_admin,
    })])
}

pub(super) fn change_password(kv: &Pending, name: &str, hash: &str) -> Decision {
    existing_user(kv, name)?;
    password_hash(hash)?;
    done(vec![Payload::UserPasswordChanged(
        pb::UserPasswordChanged {
            username: name.to_string(),
            password_hash: hash.to_string(),
        },
    )])
}

pub(super) fn set_admin(kv: &Pending, name: &str, is_admin: bool) -> Decision {
    existing_user(kv, name)?;
    done(vec![Payload::UserAdminSet(pb::UserAdminSet {
        username: name.to_string(),
        is_admin,
    })])
}

pub(super) fn delete_user(kv: &Pending, name: &str) -> Decision {
    existing_user(kv, name)?;
    done(vec![Payload::UserDeleted(pb::UserDeleted {
        username: name.to_string(),
    })])
}

pub(super) fn issue_token(
    kv: &Pending,
    token_id: &str,
    name: &str,
    secret_hash: &str,
    expires_at: i64,
    description: &str,
) -> Decision {
    existing_user(kv, name)?;
    if token_id.is_empty() || secret_hash.len() != 64 {
        return Err(Error::invalid("a token needs an id and a SHA-256 hash"));
    }
    if load_token(kv, token_id)?.is_some() {
        return Err(Error::AlreadyExists(format!("Token {token_id} exists.")));
    }
    done(vec![Payload::TokenIssued(pb::TokenIssued {
        token_id: token_id.to_string(),
        username: name.to_string(),
        secret_hash: secret_hash.to_string(),
        expires_at,
        description: description.to_string(),
    })])
}

pub(super) fn revoke_token(kv: &Pending, token_id: &str) -> Decision {
    if load_token(kv, token_id)?.is_none() {
        return Err(Error::NotFound(format!("Token {token_id} not found")));
    }
    done(vec![Payload::TokenRevoked(pb::TokenRevoked {
        token_id: token_id.to_string(),
    })])
}

pub(super) fn set_permission(
    kv: &Pending,
    experiment_id: &str,
    name: &str,
    permission: Permission,
    mode: GrantMode,
) -> Decision {
    let exp = find_experiment(kv, experiment_id)?;
    existing_user(kv, name)?;
    let had = crate::projection::access::grant(kv, exp.id, name)?;
    match (mode, had) {
        (GrantMode::Create, Some(_)) => {
            return Err(Error::AlreadyExists(format!(
                "Experiment permission (experiment_id={experiment_id}, username={name}) already exists."
            )));
        }
        (GrantMode::Update, None) => return Err(permission_not_found(experiment_id, name)),
        _ => {}
    }
    done(vec![Payload::ExperimentPermissionSet(
        pb::ExperimentPermissionSet {
            experiment_id: exp.id.to_string(),
            username: name.to_string(),
            permission: permission.name().to_string(),
        },
    )])
}

fn permission_not_found(experiment_id: &str, name: &str) -> Error {
    Error::NotFound(format!(
        "Experiment permission with experiment_id={experiment_id} and username={name} not found"
    ))
}

pub(super) fn delete_permission(kv: &Pending, experiment_id: &str, name: &str) -> Decision {
    let exp = find_experiment(kv, experiment_id)?;
    existing_user(kv, name)?;
    if crate::projection::access::grant(kv, exp.id, name)?.is_none() {
        return Err(permission_not_found(experiment_id, name));
    }
    done(vec![Payload::ExperimentPermissionDeleted(
        pb::ExperimentPermissionDeleted {
            experiment_id: exp.id.to_string(),
            username: name.to_string(),
        },
    )])
}

/// The grant that makes a user the manager of the experiment they create.
pub(super) fn creator_grant(experiment_id: u64, actor: &str) -> Payload {
    Payload::ExperimentPermissionSet(pb::ExperimentPermissionSet {
        experiment_id: experiment_id.to_string(),
        username: actor.to_string(),
        permission: Permission::Manage.name().to_string(),
    })
}

decide_done!(c::CreateUser, |c, at| create_user(
    at.kv,
    &c.username,
    &c.password_hash,
    c.is_admin
));
decide_done!(c::ChangePassword, |c, at| change_password(
    at.kv,
    &c.username,
    &c.password_hash
));
decide_done!(c::SetAdmin, |c, at| set_admin(
    at.kv,
    &c.username,
    c.is_admin
));
decide_done!(c::DeleteUser, |c, at| delete_user(at.kv, &c.username));
decide_done!(c::IssueToken, |c, at| issue_token(
    at.kv,
    &c.token_id,
    &c.username,
    &c.secret_hash,
    c.expires_at,
    &c.description,
));
decide_done!(c::RevokeToken, |c, at| revoke_token(at.kv, &c.token_id));
decide_done!(c::SetExperimentPermission, |c, at| set_permission(
    at.kv,
    &c.experiment_id,
    &c.username,
    c.permission,
    c.mode,
));
decide_done!(c::DeleteExperimentPermission, |c, at| delete_permission(
    at.kv,
    &c.experiment_id,
    &c.username
));
