//! Users and experiment permissions (`--auth`), on MLflow's basic-auth endpoints, so
//! that mlflow's `AuthServiceClient` (`mlflow.server.get_app_client("basic-auth", ..)`)
//! works unmodified: `/mlflow/users/...` and `/mlflow/experiments/permissions/...`
//! (API 2.0), and the per-user grant/revoke/get of API 3.0. Arbor's own API tokens
//! are under `/api/arbor/v1/tokens/...`. Secrets are hashed here, off the async workers,
//! before any command is sent.

use axum::Json;
use axum::response::Response;
use axum::routing::{get, patch, post};
use serde::Deserialize;

use super::request::{self, Mlflow, required};
use super::response::Empty;
use super::{Routes, Shared, json};
use crate::auth::{self, Caller, Need};
use crate::domain::Error;
use crate::domain::access::{GrantMode, Permission};
use crate::domain::commands::{
    ChangePassword, CreateUser, DeleteExperimentPermission, DeleteUser, SetAdmin,
    SetExperimentPermission,
};

/// API 2.0: users, and permissions per experiment.
pub(super) fn routes() -> Routes {
    Routes::new()
        .route("/users/create", post(create_user))
        .route("/users/get", get(get_user))
        .route("/users/current", get(current_user))
        .route("/users/list", get(list_users))
        .route("/users/update-password", patch(update_password))
        .route("/users/update-admin", patch(update_admin))
        .route("/users/delete", axum::routing::delete(delete_user))
        .route("/experiments/permissions/create", post(create_permission))
        .route("/experiments/permissions/get", get(get_permission))
        .route("/experiments/permissions/update", patch(update_permission))
        .route(
            "/experiments/permissions/delete",
            axum::routing::delete(delete_permission),
        )
}

/// API 3.0 (`/api/3.0/mlflow/...`): one grant per user and resource.
pub(super) fn v3_routes() -> Routes {
    Routes::new()
        .route("/users/permissions/grant", post(grant))
        .route("/users/permissions/revoke", post(revoke))
        .route("/users/permissions/get", get(get_user_permission))
}

#[derive(Deserialize, Debug)]
struct UserRequest {
    #[serde(default, deserialize_with = "request::string")]
    username: Option<String>,
    #[serde(default, deserialize_with = "request::string")]
    password: Option<String>,
    #[serde(default, deserialize_with = "request::string")]
    current_password: Option<String>,
    #[serde(default, deserialize_with = "request::boolean")]
    is_admin: Option<bool>,
}

#[derive(serde::Serialize)]
struct UserOut {
    id: u64,
    username: String,
    is_admin: bool,
}

impl From<crate::projection::access::UserRecord> for UserOut {
    fn from(u: crate::projection::access::UserRecord) -> Self {
        UserOut {
            id: u.id,
            username: u.username,
            is_admin: u.is_admin,
        }
    }
}

#[derive(serde::Serialize)]
struct OneUser {
    user: UserOut,
}

fn user_not_found(name: &str) -> Error {
    Error::NotFound(format!("User with username={name} not found"))
}

/// Whether the caller is `name` (users may read and change their own account).
pub(crate) fn is_self(caller: &Caller, name: &str) -> bool {
    caller.actor() == Some(name)
}

async fn create_user(state: Shared, Mlflow(r): Mlflow<UserRequest>) -> Result<Response, Error> {
    let store = state.store.admin()?;
    let name = required("username", r.username)?;
    let password = required("password", r.password)?;
    crate::domain::access::username(&name)?;
    let hash = auth::hash_password_async(password).await?;
    store
        .submit(CreateUser {
            username: name.clone(),
            password_hash: hash,
            is_admin: false,
        })
        .await?;
    let user = store.user(&name)?.ok_or_else(|| user_not_found(&name))?;
    json(&OneUser { user: user.into() })
}

async fn get_user(state: Shared, Mlflow(r): Mlflow<UserRequest>) -> Result<Response, Error> {
    let name = required("username", r.username)?;
    let store = if is_self(state.store.caller(), &name) {
        state.store.any()
    } else {
        state.store.admin()?
    };
    let user = store.user(&name)?.ok_or_else(|| user_not_found(&name))?;
    json(&OneUser { user: user.into() })
}

async fn current_user(state: Shared) -> Result<Response, Error> {
    let Some(name) = state.store.caller().actor() else {
        return Err(Error::invalid(
            "authentication is off: there is no current user",
        ));
    };
    let user = state
        .store
        .any()
        .user(name)?
        .ok_or_else(|| user_not_found(name))?;
    json(&OneUser { user: user.into() })
}

async fn list_users(state: Shared) -> Result<Response, Error> {
    let users: Vec<UserOut> = state
        .store
        .admin()?
        .users()?
        .into_iter()
        .map(UserOut::from)
        .collect();
    json(&serde_json::json!({ "users": users }))
}

/// Admins set anyone's password; users change their own with `current_password`, as
/// MLflow asks.
async fn update_password(
    state: Shared,
    Mlflow(r): Mlflow<UserRequest>,
) -> Result<Json<Empty>, Error> {
    let name = required("username", r.username)?;
    let password = required("password", r.password)?;
    let store = if is_self(state.store.caller(), &name) {
        let current = r
            .current_password
            .filter(|p| !p.is_empty())
            .ok_or_else(|| {
                Error::invalid("Current password is required when changing your own password.")
            })?;
        let checker = auth::Authenticator::new(state.store.any().clone(), auth::Policy::default());
        if checker.check_password(&name, &current).await.is_err() {
            return Err(Error::invalid("Current password does not match."));
        }
        if current == password {
            return Err(Error::invalid(
                "New password must differ from the current password.",
            ));
        }
        state.store.any()
    } else {
        state.store.admin()?
    };
    let hash = auth::hash_password_async(password).await?;
    store
        .submit(ChangePassword {
            username: name,
            password_hash: hash,
        })
        .await?;
    Ok(Json(Empty {}))
}

async fn update_admin(state: Shared, Mlflow(r): Mlflow<UserRequest>) -> Result<Json<Empty>, Error> {
    let store = state.store.admin()?;
    let name = required("username", r.username)?;
    let is_admin = request::present("is_admin", r.is_admin)?;
    store
        .submit(SetAdmin {
            username: name,
            is_admin,
        })
        .await?;
    Ok(Json(Empty {}))
}

async fn delete_user(state: Shared, Mlflow(r): Mlflow<UserRequest>) -> Result<Json<Empty>, Error> {
    let store = state.store.admin()?;
    let name = required("username", r.username)?;
    if is_self(state.store.caller(), &name) {
        return Err(Error::BadRequest(
            "Users cannot delete their own account. Ask another admin to delete this user instead."
                .into(),
        ));
    }
    store.submit(DeleteUser { username: name }).await?;
    Ok(Json(Empty {}))
}

#[derive(Deserialize, Debug)]
struct PermissionRequest {
    #[serde(default, deserialize_with = "request::string")]
    experiment_id: Option<String>,
    #[serde(default, deserialize_with = "request::string")]
    username: Option<String>,
    #[serde(default, deserialize_with = "request::string")]
    permission: Option<String>,
    #[serde(default, deserialize_with = "request::string")]
    resource_type: Option<String>,
    #[serde(default, deserialize_with = "request::string")]
    resource_id: Option<String>,
}

impl PermissionRequest {
    /// The experiment of an API 3.0 request (`resource_type` must be `experiment`).
    fn v3_experiment(&mut self) -> Result<String, Error> {
        let kind = required("resource_type", self.resource_type.take())?;
        if kind != "experiment" {
            return Err(Error::invalid(format!(
                "resource_type '{kind}' is not supported: Arbor keeps permissions on experiments"
            )));
        }
        required("resource_id", self.resource_id.take())
    }
}

async fn set_permission(
    state: &Shared,
    experiment_id: String,
    username: String,
    permission: Option<String>,
    mode: GrantMode,
) -> Result<(), Error> {
    let permission = Permission::parse(&required("permission", permission)?)?;
    state
        .store
        .on_experiment(&experiment_id, Need::Manage)?
        .submit(SetExperimentPermission {
            experiment_id,
            username,
            permission,
            mode,
        })
        .await
}

async fn create_permission(
    state: Shared,
    Mlflow(r): Mlflow<PermissionRequest>,
) -> Result<Response, Error> {
    let id = required("experiment_id", r.experiment_id)?;
    let name = required("username", r.username)?;
    set_permission(
        &state,
        id.clone(),
        name.clone(),
        r.permission,
        GrantMode::Create,
    )
    .await?;
    permission_answer(&state, &id, &name)
}

async fn update_permission(
    state: Shared,
    Mlflow(r): Mlflow<PermissionRequest>,
) -> Result<Json<Empty>, Error> {
    let id = required("experiment_id", r.experiment_id)?;
    let name = required("username", r.username)?;
    set_permission(&state, id, name, r.permission, GrantMode::Update).await?;
    Ok(Json(Empty {}))
}

async fn delete_permission(
    state: Shared,
    Mlflow(r): Mlflow<PermissionRequest>,
) -> Result<Json<Empty>, Error> {
    let id = required("experiment_id", r.experiment_id)?;
    let name = required("username", r.username)?;
    state
        .store
        .on_experiment(&id, Need::Manage)?
        .submit(DeleteExperimentPermission {
            experiment_id: id,
            username: name,
        })
        .await?;
    Ok(Json(Empty {}))
}

/// `{"experiment_permission": {experiment_id, user_id, permission}}` for a grant.
fn permission_answer(state: &Shared, experiment_id: &str, name: &str) -> Result<Response, Error> {
    let store = state.store.on_experiment(experiment_id, Need::Manage)?;
    let exp = store.get_experiment(experiment_id)?;
    let user = store.user(name)?.ok_or_else(|| user_not_found(name))?;
    let permission = store.grant(exp.id, name)?.ok_or_else(|| {
        Error::NotFound(format!(
            "Experiment permission with experiment_id={experiment_id} and username={name} not found"
        ))
    })?;
    json(&serde_json::json!({
        "experiment_permission": {
            "experiment_id": exp.id.to_string(),
            "user_id": user.id,
            "permission": permission.name(),
        }
    }))
}

async fn get_permission(
    state: Shared,
    Mlflow(r): Mlflow<PermissionRequest>,
) -> Result<Response, Error> {
    let id = required("experiment_id", r.experiment_id)?;
    let name = required("username", r.username)?;
    permission_answer(&state, &id, &name)
}

async fn grant(
    state: Shared,
    Mlflow(mut r): Mlflow<PermissionRequest>,
) -> Result<Json<Empty>, Error> {
    let id = r.v3_experiment()?;
    let name = required("username", r.username)?;
    set_permission(&state, id, name, r.permission, GrantMode::Create).await?;
    Ok(Json(Empty {}))
}

async fn revoke(
    state: Shared,
    Mlflow(mut r): Mlflow<PermissionRequest>,
) -> Result<Json<Empty>, Error> {
    let id = r.v3_experiment()?;
    let name = required("username", r.username)?;
    state
        .store
        .on_experiment(&id, Need::Manage)?
        .submit(DeleteExperimentPermission {
            experiment_id: id,
            username: name,
        })
        .await?;
    Ok(Json(Empty {}))
}

/// The user's effective permission on the experiment (their grant, else the default;
/// admins manage everything); `allowed` is MLflow's `can_use`.
async fn get_user_permission(
    state: Shared,
    Mlflow(mut r): Mlflow<PermissionRequest>,
) -> Result<Response, Error> {
    let id = r.v3_experiment()?;
    let name = required("username", r.username)?;
    let store = if is_self(state.store.caller(), &name) {
        state.store.any()
    } else {
        state.store.on_experiment(&id, Need::Manage)?
    };
    let user = store.user(&name)?.ok_or_else(|| user_not_found(&name))?;
    let effective = match id.parse::<u64>() {
        Err(_) => Permission::NoPermissions,
        Ok(_) if user.is_admin => Permission::Manage,
        Ok(n) => match store.grant(n, &name)? {
            Some(p) => p,
            None => match state.store.caller() {
                Caller::User(u) => u.default_permission,
                Caller::Anyone => Permission::Manage,
            },
        },
    };
    json(&serde_json::json!({
        "allowed": effective >= Permission::Use,
        "permission": effective.name(),
    }))
}
