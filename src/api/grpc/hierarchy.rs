//! `arbor.v1.HierarchyService`: the run tree, answered from the hierarchy index.

use tonic::{Request, Response, Status};

use super::Guarded;
use super::convert;
use crate::auth::Need;
use crate::domain::commands::GetOrCreateChildRun;
use crate::hierarchy::TreeNode;
use crate::pb::{self, hierarchy_service_server::HierarchyService};
use crate::store::Store;

pub struct HierarchyApi {
    store: Guarded,
}

impl HierarchyApi {
    pub fn new(store: Store) -> Self {
        Self {
            store: Guarded::new(store),
        }
    }
}

/// Depth is bounded by `MAX_TREE_DEPTH`, so this recursion is too.
fn node(n: TreeNode) -> pb::RunNode {
    pb::RunNode {
        info: Some(convert::run_info(&n.run)),
        latest_metrics: n.run.latest_metrics().map(convert::metric).collect(),
        children: n.children.into_iter().map(node).collect(),
        child_count: n.child_count,
    }
}

#[tonic::async_trait]
impl HierarchyService for HierarchyApi {
    async fn get_run_tree(
        &self,
        req: Request<pb::GetRunTreeRequest>,
    ) -> Result<Response<pb::GetRunTreeResponse>, Status> {
        let store = self.store.of(&req)?;
        let r = req.into_inner();
        let view = convert::view_type(r.view_type, "view_type")?;
        let tree = store.on_run(&r.run_id, Need::Read)?.run_tree(
            &r.run_id,
            r.max_depth,
            view,
            &|run| store.sees(run),
        )?;
        Ok(Response::new(pb::GetRunTreeResponse {
            root: Some(node(tree)),
        }))
    }

    async fn list_children(
        &self,
        req: Request<pb::ListChildrenRequest>,
    ) -> Result<Response<pb::ListChildrenResponse>, Status> {
        let store = self.store.of(&req)?;
        let r = req.into_inner();
        let view = convert::view_type(r.view_type, "view_type")?;
        let (runs, next) = store.on_run(&r.run_id, Need::Read)?.children(
            &r.run_id,
            view,
            &|run| store.sees(run),
            r.max_results.map(i64::from),
            &r.page_token,
        )?;
        Ok(Response::new(pb::ListChildrenResponse {
            runs: runs.into_iter().map(convert::run).collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }

    async fn get_ancestors(
        &self,
        req: Request<pb::GetAncestorsRequest>,
    ) -> Result<Response<pb::GetAncestorsResponse>, Status> {
        let store = self.store.of(&req)?;
        let run_id = req.into_inner().run_id;
        let ancestors = store
            .on_run(&run_id, Need::Read)?
            .ancestors(&run_id, &|run| store.sees(run))?;
        Ok(Response::new(pb::GetAncestorsResponse {
            ancestors: ancestors.iter().map(convert::run_info).collect(),
        }))
    }

    async fn get_run_by_path(
        &self,
        req: Request<pb::GetRunByPathRequest>,
    ) -> Result<Response<pb::GetRunByPathResponse>, Status> {
        let store = self.store.of(&req)?;
        let r = req.into_inner();
        let run = store
            .on_experiment(&r.experiment_id, Need::Read)?
            .run_at_path(&r.experiment_id, &r.path, &|run| store.sees(run))?;
        Ok(Response::new(pb::GetRunByPathResponse {
            run: Some(convert::run(run)),
        }))
    }

    async fn get_or_create_child_run(
        &self,
        req: Request<pb::GetOrCreateChildRunRequest>,
    ) -> Result<Response<pb::GetOrCreateChildRunResponse>, Status> {
        let store = self.store.of(&req)?;
        let r = req.into_inner();
        let (run, created) = store
            .on_run(&r.parent_run_id, Need::Update)?
            .submit(GetOrCreateChildRun {
                parent_run_id: r.parent_run_id,
                run_name: r.run_name,
                user_id: r.user_id,
                start_time: r.start_time,
                tags: r.tags.into_iter().map(convert::tag).collect(),
            })
            .await?;
        Ok(Response::new(pb::GetOrCreateChildRunResponse {
            run: Some(convert::run(run)),
            created,
        }))
    }
}
