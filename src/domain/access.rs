//! Who may do what (`--auth`): MLflow's permission levels on experiments and the rules
//! for user names. Runs, metrics, artifacts, logged models and datasets follow the
//! permission of their experiment.

use super::Error;

/// A user's permission on an experiment, MLflow's model. Ordered: each level can do
/// what the ones before it can (`Use` reads like `Read`; MLflow keeps it for gateway
/// endpoints, which Arbor does not serve).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Permission {
    NoPermissions,
    Read,
    Use,
    Edit,
    Manage,
}

impl Permission {
    pub const ALL: [Self; 5] = [
        Self::NoPermissions,
        Self::Read,
        Self::Use,
        Self::Edit,
        Self::Manage,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::NoPermissions => "NO_PERMISSIONS",
            Self::Read => "READ",
            Self::Use => "USE",
            Self::Edit => "EDIT",
            Self::Manage => "MANAGE",
        }
    }

    /// The level named `name` (MLflow's names); INVALID_PARAMETER_VALUE otherwise.
    pub fn parse(name: &str) -> Result<Self, Error> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "Invalid permission '{name}'. Valid permissions are: {}",
                    Self::ALL.map(Self::name).join(", ")
                ))
            })
    }

    pub fn can_read(self) -> bool {
        self >= Self::Read
    }

    /// Create runs, log to them, rename and tag the experiment.
    pub fn can_update(self) -> bool {
        self >= Self::Edit
    }

    /// Delete and restore the experiment and its runs.
    pub fn can_delete(self) -> bool {
        self >= Self::Manage
    }

    /// Grant and revoke others' permissions on the experiment.
    pub fn can_manage(self) -> bool {
        self >= Self::Manage
    }
}

/// Longest user name; they appear in keys, events and headers.
pub const MAX_USERNAME_CHARS: usize = 256;

/// A user name: non-empty, at most `MAX_USERNAME_CHARS`, no control characters and no
/// `:` (HTTP Basic separates name and password with it).
pub fn username(name: &str) -> Result<(), Error> {
    if name.is_empty() {
        return Err(Error::invalid("Username cannot be empty."));
    }
    if name.chars().count() > MAX_USERNAME_CHARS {
        return Err(Error::invalid(format!(
            "Username is longer than {MAX_USERNAME_CHARS} characters."
        )));
    }
    if name.chars().any(|c| c.is_control() || c == ':') {
        return Err(Error::invalid(
            "Username may not contain ':' or control characters.",
        ));
    }
    Ok(())
}

/// How `SetExperimentPermission` treats an existing grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantMode {
    /// MLflow's create: RESOURCE_ALREADY_EXISTS if the user has one.
    Create,
    /// MLflow's update: RESOURCE_DOES_NOT_EXIST if the user has none.
    Update,
}
