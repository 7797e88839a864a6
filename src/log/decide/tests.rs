//! Each command's accept and refuse paths, decided against a real (temporary) sled tree
//! the way the committer decides them: decide, project the events, read the answer,
//! apply. A refused command must write nothing.

use crate::db::keys;
use crate::db::kv::Pending;
use crate::domain::access::{GrantMode, Permission};
use crate::domain::commands::*;
use crate::domain::{
    DEFAULT_EXPERIMENT_NAME, Dataset, DatasetInput, Error, KeyValue, MetricPoint, RunStatus,
};
use crate::log::command::{At, Command};
use crate::pb;
use crate::projection;

/// A store's tree without a committer: commands decided one at a time.
struct Scratch {
    _db: sled::Db,
    tree: sled::Tree,
    seq: u64,
    actor: &'static str,
}

impl Scratch {
    /// A tree with the Default experiment, as every store has.
    fn new() -> Scratch {
        let db = sled::Config::new().temporary(true).open().expect("db");
        let tree = db.open_tree("t").expect("tree");
        let mut s = Scratch {
            _db: db,
            tree,
            seq: 1,
            actor: "",
        };
        s.ok(CreateExperiment {
            name: DEFAULT_EXPERIMENT_NAME.into(),
            ..Default::default()
        });
        s
    }

    fn submit<C: Command>(&mut self, command: C) -> Result<C::Output, Error> {
        let mut pending = Pending::new(&self.tree);
        let (payloads, key) = command.decide(&At {
            kv: &pending,
            now: 1_000,
            actor: self.actor,
        })?;
        for payload in payloads {
            let ev = pb::Event {
                seq: self.seq,
                timestamp: 1_000,
                actor: self.actor.to_string(),
                payload: Some(payload),
            };
            self.seq += 1;
            projection::apply(&ev, &mut pending)?;
            pending.put(keys::log(ev.seq), prost::Message::encode_to_vec(&ev));
        }
        let output = C::output(key, &pending)?;
        self.tree.apply_batch(pending.into_batch())?;
        Ok(output)
    }

    fn ok<C: Command>(&mut self, command: C) -> C::Output {
        let what = format!("{command:?}");
        self.submit(command)
            .unwrap_or_else(|e| panic!("{what} was refused: {e}"))
    }

    /// The command is refused, and the tree is as it was.
    fn refused<C: Command>(&mut self, command: C) -> Error {
        let before: Vec<_> = self.tree.iter().map(|kv| kv.expect("read")).collect();
        let what = format!("{command:?}");
        let Err(e) = self.submit(command) else {
            panic!("{what} was accepted");
        };
        let after: Vec<_> = self.tree.iter().map(|kv| kv.expect("read")).collect();
        assert_eq!(before, after, "{what} was refused ({e}) but wrote");
        e
    }

    fn run(&mut self, tags: Vec<KeyValue>) -> String {
        self.ok(CreateRun {
            tags,
            ..Default::default()
        })
        .run_id
    }

    fn get_run(&self, id: &str) -> projection::RunRecord {
        let kv = Pending::new(&self.tree);
        projection::load_run(&kv, id)
            .expect("read")
            .expect("the run")
    }
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue::new(k, v)
}

macro_rules! assert_refused {
    ($s:expr, $command:expr, $kind:pat) => {{
        let e = $s.refused($command);
        assert!(matches!(e, $kind), "refused with {e:?}");
        e
    }};
}

#[test]
fn experiments_are_created_renamed_tagged_deleted_and_restored() {
    let mut s = Scratch::new();
    let id = s.ok(CreateExperiment {
        name: "a".into(),
        tags: vec![kv("k", "v")],
        ..Default::default()
    });
    assert_eq!(id, "1");
    assert_refused!(
        s,
        CreateExperiment {
            name: "a".into(),
            ..Default::default()
        },
        Error::AlreadyExists(_)
    );
    assert_refused!(s, CreateExperiment::default(), Error::InvalidArgument(_));
    s.ok(CreateExperiment {
        name: "b".into(),
        ..Default::default()
    });
    assert_refused!(
        s,
        RenameExperiment {
            experiment_id: id.clone(),
            new_name: "b".into()
        },
        Error::AlreadyExists(_) | Error::InvalidArgument(_)
    );
    s.ok(RenameExperiment {
        experiment_id: id.clone(),
        new_name: "c".into(),
    });
    s.ok(SetExperimentTag {
        experiment_id: id.clone(),
        key: "k2".into(),
        value: "".into(),
    });
    s.ok(DeleteExperimentTag {
        experiment_id: id.clone(),
        key: "k".into(),
    });
    assert_refused!(
        s,
        DeleteExperimentTag {
            experiment_id: id.clone(),
            key: "absent".into()
        },
        Error::NotFound(_) | Error::InvalidArgument(_)
    );
    assert_refused!(
        s,
        DeleteExperiment {
            experiment_id: "99".into()
        },
        Error::NotFound(_)
    );
    s.ok(DeleteExperiment {
        experiment_id: id.clone(),
    });
    assert_refused!(
        s,
        CreateRun {
            experiment_id: id.clone(),
            ..Default::default()
        },
        Error::InvalidArgument(_) | Error::FailedPrecondition(_)
    );
    s.ok(RestoreExperiment { experiment_id: id });
}

#[test]
fn an_experiment_made_by_someone_is_theirs_to_manage() {
    let mut s = Scratch::new();
    s.actor = "alice";
    let id: u64 = s
        .ok(CreateExperiment {
            name: "mine".into(),
            ..Default::default()
        })
        .parse()
        .expect("an id");
    let kv = Pending::new(&s.tree);
    let grant = projection::access::grant(&kv, id, "alice").expect("read");
    assert_eq!(grant, Some(Permission::Manage));
}

#[test]
fn imported_experiments_merge_by_name() {
    let mut s = Scratch::new();
    let first = s.ok(ImportExperiment {
        name: "x".into(),
        creation_time: 5,
        last_update_time: 6,
        ..Default::default()
    });
    let again = s.ok(ImportExperiment {
        name: "x".into(),
        ..Default::default()
    });
    assert_eq!(first, again);
    let default = s.ok(ImportExperiment {
        name: DEFAULT_EXPERIMENT_NAME.into(),
        ..Default::default()
    });
    assert_eq!(default, "0");
}

#[test]
fn runs_are_created_updated_deleted_and_restored_with_their_subtrees() {
    let mut s = Scratch::new();
    let parent = s.run(vec![]);
    let child = s.run(vec![kv("mlflow.parentRunId", &parent)]);
    let r = s.get_run(&child);
    assert_eq!((r.parent_run_id.as_str(), r.depth), (parent.as_str(), 1));
    assert_refused!(
        s,
        CreateRun {
            experiment_id: "42".into(),
            ..Default::default()
        },
        Error::NotFound(_)
    );
    let updated = s.ok(UpdateRun {
        run_id: child.clone(),
        status: Some(RunStatus::Finished),
        end_time: Some(7),
        run_name: Some("renamed".into()),
    });
    assert_eq!(
        (updated.run_name.as_str(), updated.end_time),
        ("renamed", Some(7))
    );
    assert_refused!(
        s,
        UpdateRun {
            run_id: "nope".into(),
            ..Default::default()
        },
        Error::NotFound(_)
    );
    s.ok(DeleteRun {
        run_id: parent.clone(),
        cascade: true,
    });
    assert!(s.get_run(&child).deleted, "the cascade reaches the child");
    assert_refused!(
        s,
        UpdateRun {
            run_id: child.clone(),
            run_name: Some("x".into()),
            ..Default::default()
        },
        Error::InvalidArgument(_) | Error::FailedPrecondition(_) | Error::NotFound(_)
    );
    s.ok(RestoreRun {
        run_id: parent.clone(),
        cascade: false,
    });
    assert!(!s.get_run(&parent).deleted && s.get_run(&child).deleted);
    assert_refused!(
        s,
        DeleteRun {
            run_id: "nope".into(),
            cascade: false
        },
        Error::NotFound(_)
    );
}

#[test]
fn a_named_child_is_made_once() {
    let mut s = Scratch::new();
    let parent = s.run(vec![]);
    let ask = |name: &str| GetOrCreateChildRun {
        parent_run_id: parent.clone(),
        run_name: name.into(),
        ..Default::default()
    };
    let (first, created) = s.ok(ask("fold-1"));
    assert!(created);
    let (again, created) = s.ok(ask("fold-1"));
    assert!(!created);
    assert_eq!(first.run_id, again.run_id);
    assert_eq!(first.parent_run_id, parent);
    assert_refused!(s, ask(""), Error::InvalidArgument(_));
    assert_refused!(
        s,
        GetOrCreateChildRun {
            parent_run_id: "nope".into(),
            run_name: "x".into(),
            ..Default::default()
        },
        Error::NotFound(_)
    );
}

#[test]
fn imported_runs_keep_their_ids_and_are_made_once() {
    let mut s = Scratch::new();
    let id = "0123456789abcdef0123456789abcdef".to_string();
    let import = || ImportRun {
        run_id: id.clone(),
        experiment_id: "0".into(),
        start_time: Some(3),
        ..Default::default()
    };
    let (run, created) = s.ok(import());
    assert!(created);
    assert_eq!((run.run_id.as_str(), run.start_time), (id.as_str(), 3));
    let (_, created) = s.ok(import());
    assert!(!created);
    assert_refused!(
        s,
        ImportRun {
            run_id: "../x".into(),
            ..Default::default()
        },
        Error::InvalidArgument(_)
    );
}

#[test]
fn batches_keep_params_fixed_and_refuse_cycles() {
    let mut s = Scratch::new();
    let a = s.run(vec![]);
    let b = s.run(vec![kv("mlflow.parentRunId", &a)]);
    s.ok(LogBatch::param(a.clone(), kv("lr", "0.1")));
    s.ok(LogBatch::param(a.clone(), kv("lr", "0.1")));
    assert_refused!(
        s,
        LogBatch::param(a.clone(), kv("lr", "0.2")),
        Error::InvalidArgument(_)
    );
    let point = MetricPoint {
        key: "loss".into(),
        value: 0.5,
        timestamp: 1,
        step: 2,
    };
    s.ok(LogBatch::metric(a.clone(), point.clone(), None));
    assert_eq!(s.get_run(&a).latest_metrics["loss"].last_step, 2);
    assert_refused!(
        s,
        LogBatch::metric("nope".into(), point, None),
        Error::NotFound(_)
    );
    // a under its own child: a cycle.
    assert_refused!(
        s,
        LogBatch::tag(a.clone(), kv("mlflow.parentRunId", &b)),
        Error::InvalidArgument(_)
    );
    s.ok(LogBatch::tag(b.clone(), kv("note", "x")));
    s.ok(DeleteTag {
        run_id: b.clone(),
        key: "mlflow.parentRunId".into(),
    });
    assert_eq!(
        s.get_run(&b).parent_run_id,
        "",
        "deleting the parent tag makes a root"
    );
    assert_refused!(
        s,
        DeleteTag {
            run_id: b,
            key: "absent".into()
        },
        Error::InvalidArgument(_) | Error::NotFound(_)
    );
}

#[test]
fn inputs_outputs_and_model_history_are_recorded() {
    let mut s = Scratch::new();
    let run = s.run(vec![]);
    let dataset = DatasetInput {
        dataset: Dataset {
            name: "d".into(),
            digest: "1".into(),
            source_type: "local".into(),
            source: "{}".into(),
            ..Default::default()
        },
        tags: vec![],
    };
    s.ok(LogInputs {
        run_id: run.clone(),
        datasets: vec![dataset.clone()],
        models: vec![],
    });
    assert_refused!(
        s,
        LogInputs {
            run_id: "nope".into(),
            datasets: vec![dataset],
            models: vec![]
        },
        Error::NotFound(_)
    );
    s.ok(AppendModelHistory {
        run_id: run.clone(),
        model_json: "{\"flavors\": {}}".into(),
    });
    assert!(
        s.get_run(&run)
            .tags
            .contains_key(crate::domain::TAG_LOG_MODEL_HISTORY)
    );
    assert_refused!(
        s,
        AppendModelHistory {
            run_id: run.clone(),
            model_json: "not json".into()
        },
        Error::InvalidArgument(_)
    );
    // As on MLflow's server, an output names a model without its being looked up.
    s.ok(LogOutputs {
        run_id: run,
        models: vec![("m-1".into(), 3)],
    });
    assert_refused!(
        s,
        LogOutputs {
            run_id: "nope".into(),
            models: vec![("m-1".into(), 0)]
        },
        Error::NotFound(_)
    );
}

#[test]
fn logged_models_are_made_finalized_tagged_and_deleted() {
    let mut s = Scratch::new();
    let m = s.ok(CreateLoggedModel {
        experiment_id: "0".into(),
        name: "model".into(),
        params: vec![kv("p", "1")],
        ..Default::default()
    });
    assert_refused!(
        s,
        CreateLoggedModel {
            experiment_id: "77".into(),
            ..Default::default()
        },
        Error::NotFound(_)
    );
    let id = m.model_id.clone();
    let ready = s.ok(FinalizeLoggedModel {
        model_id: id.clone(),
        status: 2,
        status_message: String::new(),
    });
    assert_eq!(ready.status, 2);
    let tagged = s.ok(SetLoggedModelTags {
        model_id: id.clone(),
        tags: vec![kv("t", "v")],
    });
    assert_eq!(tagged.tags.get("t").map(String::as_str), Some("v"));
    s.ok(DeleteLoggedModelTag {
        model_id: id.clone(),
        key: "t".into(),
    });
    s.ok(LogLoggedModelParams {
        model_id: id.clone(),
        params: vec![kv("q", "2")],
    });
    s.ok(DeleteLoggedModel {
        model_id: id.clone(),
    });
    assert_refused!(
        s,
        SetLoggedModelTags {
            model_id: id,
            tags: vec![]
        },
        Error::NotFound(_)
    );
    let imported = s.ok(ImportLoggedModel {
        model_id: "m-0123456789abcdef0123456789abcdef".into(),
        experiment_id: "0".into(),
        name: "kept".into(),
        ..Default::default()
    });
    assert_eq!(imported.model_id, "m-0123456789abcdef0123456789abcdef");
}

#[test]
fn artifacts_are_recorded_and_removed() {
    let mut s = Scratch::new();
    let run = s.run(vec![]);
    let path = format!("0/{run}/artifacts/model.pkl");
    s.ok(RecordArtifact {
        path: path.clone(),
        size: 10,
        deleted: false,
    });
    s.ok(RecordArtifact {
        path,
        size: 0,
        deleted: true,
    });
}

#[test]
fn users_tokens_and_grants() {
    let mut s = Scratch::new();
    // An Argon2id PHC string, as `auth` makes them before a command is sent.
    let hash = "$argon2id$v=19$m=19456,t=2,p=1$IFBxO/NkRnKsmMnmjGoKmQ$v5r3EhijoApfrx7m/Uc3netapA5JowKe0CxbPxCsU9A".to_string();
    s.ok(CreateUser {
        username: "bob".into(),
        password_hash: hash.clone(),
        is_admin: false,
    });
    assert_refused!(
        s,
        CreateUser {
            username: "bob".into(),
            password_hash: hash.clone(),
            is_admin: false
        },
        Error::AlreadyExists(_)
    );
    assert_refused!(
        s,
        CreateUser {
            username: "eve".into(),
            password_hash: "plain".into(),
            is_admin: false
        },
        Error::InvalidArgument(_) | Error::Internal(_) | Error::Corrupt(_)
    );
    s.ok(ChangePassword {
        username: "bob".into(),
        password_hash: hash.clone(),
    });
    assert_refused!(
        s,
        SetAdmin {
            username: "nobody".into(),
            is_admin: true
        },
        Error::NotFound(_)
    );
    s.ok(SetAdmin {
        username: "bob".into(),
        is_admin: true,
    });
    let token = |secret_hash: &str| IssueToken {
        token_id: "t1".into(),
        username: "bob".into(),
        secret_hash: secret_hash.into(),
        expires_at: 0,
        description: "ci".into(),
    };
    assert_refused!(s, token(&hash), Error::InvalidArgument(_));
    s.ok(token(&"ab".repeat(32)));
    assert_refused!(s, token(&"ab".repeat(32)), Error::AlreadyExists(_));
    s.ok(RevokeToken {
        token_id: "t1".into(),
    });
    assert_refused!(
        s,
        RevokeToken {
            token_id: "t-absent".into()
        },
        Error::NotFound(_)
    );
    let grant = |permission| SetExperimentPermission {
        experiment_id: "0".into(),
        username: "bob".into(),
        permission,
        mode: GrantMode::Create,
    };
    s.ok(grant(Permission::Read));
    assert_refused!(s, grant(Permission::Edit), Error::AlreadyExists(_));
    s.ok(DeleteExperimentPermission {
        experiment_id: "0".into(),
        username: "bob".into(),
    });
    assert_refused!(
        s,
        DeleteExperimentPermission {
            experiment_id: "0".into(),
            username: "bob".into()
        },
        Error::NotFound(_)
    );
    s.ok(DeleteUser {
        username: "bob".into(),
    });
    assert_refused!(
        s,
        DeleteUser {
            username: "bob".into()
        },
        Error::NotFound(_)
    );
}
