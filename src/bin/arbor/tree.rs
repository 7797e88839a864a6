//! `arbor tree RUN_ID`: a run's subtree as an indented tree, one run a line, with its
//! status and, if asked, a metric's latest value.

use std::io::Write;

use arbor::pb::{self, hierarchy_service_client::HierarchyServiceClient};

pub struct TreeOptions {
    pub server: String,
    pub run_id: String,
    pub metric: Option<String>,
    pub max_depth: Option<u32>,
    /// Include deleted runs.
    pub all: bool,
}

fn status_name(n: i32) -> &'static str {
    pb::RunStatus::try_from(n).map_or("UNKNOWN", |s| match s {
        pb::RunStatus::Running => "RUNNING",
        pb::RunStatus::Scheduled => "SCHEDULED",
        pb::RunStatus::Finished => "FINISHED",
        pb::RunStatus::Failed => "FAILED",
        pb::RunStatus::Killed => "KILLED",
        pb::RunStatus::Unspecified => "UNKNOWN",
    })
}

fn line(node: &pb::RunNode, metric: Option<&str>) -> String {
    let Some(info) = &node.info else {
        return "?".into();
    };
    let mut s = format!(
        "{}  {}  {}",
        info.run_name,
        info.run_id,
        status_name(info.status)
    );
    if info.lifecycle_stage == "deleted" {
        s.push_str("  (deleted)");
    }
    if let Some(key) = metric {
        match node.latest_metrics.iter().find(|m| m.key == key) {
            Some(m) => s.push_str(&format!("  {key}={}", m.value)),
            None => s.push_str(&format!("  {key}=-")),
        }
    }
    let hidden = node.child_count as usize - node.children.len().min(node.child_count as usize);
    if hidden > 0 {
        s.push_str(&format!("  (+{hidden} children not shown)"));
    }
    s
}

/// Depth is bounded by the server's tree depth limit, so this recursion is too.
fn write_children(
    out: &mut impl Write,
    node: &pb::RunNode,
    prefix: &str,
    metric: Option<&str>,
) -> std::io::Result<()> {
    let n = node.children.len();
    for (i, child) in node.children.iter().enumerate() {
        let last = i + 1 == n;
        writeln!(
            out,
            "{prefix}{}{}",
            if last { "└── " } else { "├── " },
            line(child, metric)
        )?;
        let deeper = format!("{prefix}{}", if last { "    " } else { "│   " });
        write_children(out, child, &deeper, metric)?;
    }
    Ok(())
}

pub async fn print_tree(
    opts: TreeOptions,
    out: &mut impl Write,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut client = HierarchyServiceClient::connect(opts.server.clone())
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", opts.server))?
        .max_decoding_message_size(256 << 20);
    let view = if opts.all {
        pb::ViewType::All
    } else {
        pb::ViewType::ActiveOnly
    };
    let root = client
        .get_run_tree(super::http::grpc_request(pb::GetRunTreeRequest {
            run_id: opts.run_id,
            max_depth: opts.max_depth,
            view_type: view as i32,
        }))
        .await
        .map_err(|s| format!("{}: {}", s.code(), s.message()))?
        .into_inner()
        .root
        .ok_or("the server sent no tree")?;
    writeln!(out, "{}", line(&root, opts.metric.as_deref()))?;
    write_children(out, &root, "", opts.metric.as_deref())?;
    Ok(())
}

/// `arbor tree`.
pub fn main(args: crate::config::TreeArgs) -> Result<(), arbor::server::BoxError> {
    let opts = crate::tree::TreeOptions {
        server: args.server,
        run_id: args.run_id,
        metric: args.metric,
        max_depth: args.max_depth,
        all: args.all,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(crate::tree::print_tree(opts, &mut std::io::stdout().lock()))
}
