//! Files written or removed through the artifact proxy, recorded in the log.

use crate::db::kv::Pending;
use crate::pb::{self, event::Payload};
use crate::projection;

use super::{Decision, done};
use crate::domain::commands as c;

/// A file stored or removed through the artifact proxy; tied to its run when the path names one.
pub(super) fn record(kv: &Pending, path: &str, size: &u64, deleted: &bool) -> Decision {
    // `<experiment>/<run>/artifacts/...` names a run; other paths (models) do not.
    let parts: Vec<&str> = path.splitn(4, '/').collect();
    let run_id = match parts.as_slice() {
        [_, run, "artifacts", ..] if projection::load_run(kv, run)?.is_some() => run.to_string(),
        _ => String::new(),
    };
    done(vec![if *deleted {
        Payload::ArtifactDeleted(pb::ArtifactDeleted {
            path: path.to_string(),
            run_id,
        })
    } else {
        Payload::ArtifactWritten(pb::ArtifactWritten {
            path: path.to_string(),
            size: *size,
            run_id,
        })
    }])
}

decide_done!(c::RecordArtifact, |c, at| record(
    at.kv, &c.path, &c.size, &c.deleted
));
