//! Arbor's API tokens (`/api/arbor/v1/tokens/...`): issued to a user (by the user or an
//! admin), listed, revoked. The secret is in the issuing answer only; the store keeps
//! its hash.

use axum::Json;
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;

use crate::api::mlflow::request::{self, Mlflow, required};
use crate::api::mlflow::response::Empty;
use crate::api::mlflow::users::is_self;
use crate::api::mlflow::{Shared, json};
use crate::auth;
use crate::domain::Error;
use crate::domain::commands::{IssueToken, RevokeToken};

use super::Routes;

/// Arbor's API tokens (`/api/arbor/v1/tokens/...`).
pub(super) fn routes() -> Routes {
    Routes::new()
        .route("/tokens/create", post(create_token))
        .route("/tokens/list", get(list_tokens))
        .route("/tokens/revoke", post(revoke_token))
}

#[derive(Deserialize, Debug)]
struct TokenRequest {
    #[serde(default, deserialize_with = "request::string")]
    username: Option<String>,
    #[serde(default, deserialize_with = "request::string")]
    description: Option<String>,
    #[serde(default, deserialize_with = "request::int64")]
    expires_in_days: Option<i64>,
    #[serde(default, deserialize_with = "request::string")]
    token_id: Option<String>,
}

/// Issues a token for the caller (admins: for anyone); the token is in this answer only.
async fn create_token(state: Shared, Mlflow(r): Mlflow<TokenRequest>) -> Result<Response, Error> {
    let caller = state.store.caller().actor().map(str::to_string);
    let name = match (r.username.filter(|u| !u.is_empty()), caller) {
        (Some(name), me) if me.as_deref() == Some(name.as_str()) => name,
        (Some(name), _) => {
            state.store.admin()?;
            name
        }
        (None, Some(me)) => me,
        (None, None) => {
            return Err(Error::invalid(
                "username is required when authentication is off",
            ));
        }
    };
    let expires_at = match r.expires_in_days {
        None | Some(0) => 0,
        Some(d) if d < 0 => return Err(Error::invalid("expires_in_days must be positive")),
        Some(d) => chrono::Utc::now()
            .timestamp_millis()
            .saturating_add(d.saturating_mul(86_400_000)),
    };
    let token = auth::Token::generate();
    state
        .store
        .any()
        .submit(IssueToken {
            token_id: token.id.clone(),
            username: name.clone(),
            secret_hash: token.secret_hash(),
            expires_at,
            description: r.description.unwrap_or_default(),
        })
        .await?;
    json(&serde_json::json!({
        "token": token.text(),
        "token_id": token.id,
        "username": name,
        "expires_at": expires_at,
    }))
}

async fn list_tokens(state: Shared) -> Result<Response, Error> {
    let admin = state.store.caller().is_admin();
    let me = state.store.caller().actor().map(str::to_string);
    let tokens: Vec<serde_json::Value> = state
        .store
        .any()
        .tokens()?
        .into_iter()
        .filter(|t| admin || me.as_deref() == Some(t.username.as_str()))
        .map(|t| {
            serde_json::json!({
                "token_id": t.token_id,
                "username": t.username,
                "description": t.description,
                "created_at": t.created_at,
                "expires_at": t.expires_at,
            })
        })
        .collect();
    json(&serde_json::json!({ "tokens": tokens }))
}

async fn revoke_token(
    state: Shared,
    Mlflow(r): Mlflow<TokenRequest>,
) -> Result<Json<Empty>, Error> {
    let id = required("token_id", r.token_id)?;
    let token = state
        .store
        .any()
        .token(&id)?
        .ok_or_else(|| Error::NotFound(format!("Token {id} not found")))?;
    let store = if is_self(state.store.caller(), &token.username) {
        state.store.any()
    } else {
        state.store.admin()?
    };
    store.submit(RevokeToken { token_id: id }).await?;
    Ok(Json(Empty {}))
}
