//! The run tree: every run's parent, root and depth are kept in the projections (the
//! child index by parent, the descendant index by root); this module owns the questions
//! asked of that tree (a subtree, a run's children, its ancestors) and the rules for
//! changing it (a parent must exist and not be below the run it would adopt; it may be
//! deleted or in another experiment, as in MLflow; the root tag is the server's).

use crate::db::kv::Kv;
use crate::domain::{Error, TAG_ROOT_RUN_ID, ViewType};
use crate::paging as page;
use crate::projection::{RunRecord, children as children_ids, find_run, load_run};

/// Deepest level `run_tree` expands: protobuf decoders (prost among them) refuse
/// messages nested deeper than about 100, and a tree is one nested message.
pub const MAX_TREE_DEPTH: u32 = 64;
/// Most runs in one `run_tree` answer; beyond it children are counted, not expanded.
pub const MAX_TREE_NODES: usize = 50_000;

/// A run and its subtree.
#[derive(Debug, Clone)]
pub struct TreeNode {
    pub run: RunRecord,
    pub children: Vec<TreeNode>,
    /// Children in the view, also where they were not expanded.
    pub child_count: u32,
}

/// Which runs a tree answer may show its caller (with `--auth`, the runs of experiments
/// the caller may read): a run it may not is left out with its subtree, and an ancestor
/// chain ends below it.
pub type Visible<'a> = &'a dyn Fn(&RunRecord) -> bool;

fn ordered_children(
    tree: &impl Kv,
    run_id: &str,
    view: ViewType,
    visible: Visible,
) -> Result<Vec<RunRecord>, Error> {
    let mut out = Vec::new();
    for id in children_ids(tree, run_id)? {
        if let Some(r) = load_run(tree, &id)?
            && view.admits(r.deleted)
            && visible(&r)
        {
            out.push(r);
        }
    }
    out.sort_by(|a, b| {
        a.start_time
            .cmp(&b.start_time)
            .then_with(|| a.run_id.cmp(&b.run_id))
    });
    Ok(out)
}

/// The run at `path` in an experiment: its active root named `path[0]`, that run's
/// active child named `path[1]`, and so on; runs not `visible` are not found. Where
/// several share a name at one step, the newest (latest start time, then the smallest
/// id: MLflow's default order) is taken. The roots are found through the name index, so
/// the cost is the runs of that name, then each step's children.
pub(crate) fn run_at_path(
    kv: &impl Kv,
    experiment_id: &str,
    path: &[String],
    visible: Visible,
) -> Result<RunRecord, Error> {
    if path.is_empty() || path.len() > MAX_TREE_DEPTH as usize + 1 {
        return Err(Error::invalid(format!(
            "a path names 1 to {} runs, from the root down; it has {}",
            MAX_TREE_DEPTH + 1,
            path.len()
        )));
    }
    let experiment = crate::projection::find_experiment(kv, experiment_id)?;
    let newest = |runs: Vec<RunRecord>, name: &str| {
        runs.into_iter()
            .filter(|r| !r.deleted && r.run_name == name && visible(r))
            .min_by(|a, b| {
                b.start_time
                    .cmp(&a.start_time)
                    .then_with(|| a.run_id.cmp(&b.run_id))
            })
    };
    let prefix = crate::db::keys::runs_named(experiment.id, &path[0]);
    let mut roots = Vec::new();
    for key in kv.keys_with_prefix(&prefix)? {
        let id = crate::db::keys::member_of(&key, prefix.len());
        if let Some(r) = load_run(kv, &id)?
            && r.parent_run_id.is_empty()
        {
            roots.push(r);
        }
    }
    let mut at = newest(roots, &path[0]).ok_or_else(|| {
        Error::NotFound(format!(
            "No active root run named '{}' in experiment {experiment_id}",
            path[0]
        ))
    })?;
    for (i, name) in path.iter().enumerate().skip(1) {
        let children = ordered_children(kv, &at.run_id, ViewType::ActiveOnly, visible)?;
        at = newest(children, name).ok_or_else(|| {
            Error::NotFound(format!(
                "No active run named '{name}' under {} (run {})",
                path[..i].join(" / "),
                at.run_id
            ))
        })?;
    }
    Ok(at)
}

/// The run and every run below it, breadth-first.
pub(crate) fn subtree(kv: &impl Kv, run_id: &str) -> Result<Vec<String>, Error> {
    let mut out = vec![run_id.to_string()];
    let mut i = 0;
    while i < out.len() {
        let below = children_ids(kv, &out[i])?;
        out.extend(below);
        i += 1;
    }
    Ok(out)
}

/// A run and its subtree, `max_depth` levels down (absent: all, up to
/// `MAX_TREE_DEPTH`), children in start-time order. Runs the view excludes are left
/// out with their subtrees, and so are runs not `visible`; the requested run itself is
/// always there.
pub(crate) fn run_tree(
    tree: &impl Kv,
    run_id: &str,
    max_depth: Option<u32>,
    view: ViewType,
    visible: Visible,
) -> Result<TreeNode, Error> {
    let top = find_run(tree, run_id)?;
    let max_depth = max_depth.unwrap_or(MAX_TREE_DEPTH).min(MAX_TREE_DEPTH);
    // Breadth-first: every node's children come after it, so the tree is assembled
    // from the back without recursion.
    let mut nodes: Vec<(RunRecord, u32, Vec<usize>, u32)> = vec![(top, 0, vec![], 0)];
    let mut i = 0;
    while i < nodes.len() {
        let depth = nodes[i].1;
        let children = ordered_children(tree, &nodes[i].0.run_id, view, visible)?;
        nodes[i].3 = u32::try_from(children.len()).unwrap_or(u32::MAX);
        if depth < max_depth && nodes.len() < MAX_TREE_NODES {
            for c in children {
                let at = nodes.len();
                nodes.push((c, depth + 1, vec![], 0));
                nodes[i].2.push(at);
            }
        }
        i += 1;
    }
    let mut built: Vec<Option<TreeNode>> = (0..nodes.len()).map(|_| None).collect();
    for (at, (run, _, kids, child_count)) in nodes.into_iter().enumerate().rev() {
        let children = kids.iter().filter_map(|&k| built[k].take()).collect();
        built[at] = Some(TreeNode {
            run,
            children,
            child_count,
        });
    }
    built[0]
        .take()
        .ok_or_else(|| Error::Corrupt("empty tree".into()))
}

/// A page of a run's visible children in start-time order.
pub(crate) fn children(
    tree: &impl Kv,
    run_id: &str,
    view: ViewType,
    visible: Visible,
    limit: usize,
    page_token: &str,
) -> Result<(Vec<RunRecord>, Option<String>), Error> {
    let offset = page::decode_offset(page_token)?;
    find_run(tree, run_id)?;
    Ok(page::slice(
        ordered_children(tree, run_id, view, visible)?,
        offset,
        limit,
    ))
}

/// The run's parent, its parent, and so on up to the root, or up to the first that is
/// not `visible` (which, with everything above it, is left out: a caller learns nothing
/// of a tree above a run it may not read).
pub(crate) fn ancestors(
    tree: &impl Kv,
    run_id: &str,
    visible: Visible,
) -> Result<Vec<RunRecord>, Error> {
    let run = find_run(tree, run_id)?;
    let mut out: Vec<RunRecord> = Vec::new();
    let mut parent = run.parent_run_id;
    while !parent.is_empty() {
        let p = load_run(tree, &parent)?
            .ok_or_else(|| Error::Corrupt(format!("parent {parent} of a run is missing")))?;
        if !visible(&p) {
            break;
        }
        parent = p.parent_run_id.clone();
        out.push(p);
        if out.len() > run.depth as usize {
            return Err(Error::Corrupt(format!("the ancestors of {run_id} loop")));
        }
    }
    Ok(out)
}

/// Checks that `parent_id` may become the parent of `run` (absent for a new run): it is
/// not `run` or below it. As in MLflow, the parent may be deleted or in another
/// experiment (a tree can span experiments, and a child can hang under a deleted parent
/// until a cascading restore brings the parent back), and it may not exist at all: then
/// this answers `None`, the run is a root, and its `mlflow.parentRunId` tag stays as the
/// client gave it.
pub(crate) fn check_parent(
    kv: &impl Kv,
    run_id: Option<&str>,
    parent_id: &str,
) -> Result<Option<RunRecord>, Error> {
    if run_id == Some(parent_id) {
        return Err(Error::invalid(format!(
            "Run {parent_id} cannot be its own parent"
        )));
    }
    let Some(parent) = load_run(kv, parent_id)? else {
        return Ok(None);
    };
    if let Some(run_id) = run_id {
        // Walk up from the new parent; meeting the run itself means a cycle. The walk
        // is bounded by the parent's depth, so damaged data cannot loop it.
        let mut cursor = parent.parent_run_id.clone();
        for _ in 0..=parent.depth {
            if cursor.is_empty() {
                break;
            }
            if cursor == run_id {
                return Err(Error::invalid(format!(
                    "Cannot make {parent_id} the parent of {run_id}: {parent_id} is a descendant of {run_id}, so this would make a cycle"
                )));
            }
            cursor = load_run(kv, &cursor)?
                .map(|r| r.parent_run_id)
                .unwrap_or_default();
        }
    }
    Ok(Some(parent))
}

/// Refuses a client-set `mlflow.rootRunId` that differs from what the server keeps.
pub(crate) fn check_root_tag(value: &str, root: &str) -> Result<(), Error> {
    if value != root {
        return Err(Error::invalid(format!(
            "The tag {TAG_ROOT_RUN_ID} is kept by the server (here '{root}'); it cannot be set to '{value}'"
        )));
    }
    Ok(())
}
