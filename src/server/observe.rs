//! Counts and times every request for `/metrics`, labelled by surface (grpc, mlflow,
//! http), a route with ids taken out (so that labels stay few), and status.

use super::around::{Around, Response};

#[derive(Clone, Copy, Default)]
pub(crate) struct Observe;

/// What a request is counted under, and when it came in.
pub(crate) struct Seen {
    grpc: bool,
    surface: &'static str,
    route: String,
    started: std::time::Instant,
}

impl Around for Observe {
    type Carry = Seen;

    fn before<B>(&self, req: &http::Request<B>) -> Result<Seen, Box<Response>> {
        let grpc = super::is_grpc(req.headers());
        let (surface, route) = route_of(req.uri().path(), grpc);
        Ok(Seen {
            grpc,
            surface,
            route,
            started: std::time::Instant::now(),
        })
    }

    fn after(seen: Seen, response: Response) -> Response {
        let Seen {
            grpc,
            surface,
            route,
            started,
        } = seen;
        let status = if grpc {
            // Errors come trailers-only (the status in the headers); a response
            // without it has its status in the trailers: OK unless the stream fails.
            response
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("0")
                .to_string()
        } else {
            response.status().as_str().to_string()
        };
        let m = crate::metrics::global();
        m.request_seconds
            .get_or_create(&[("surface", surface.to_string()), ("route", route.clone())])
            .observe(started.elapsed().as_secs_f64());
        m.requests
            .get_or_create(&[
                ("surface", surface.to_string()),
                ("route", route),
                ("status", status),
            ])
            .inc();
        response
    }
}

/// The surface and the route label of a path: gRPC methods as they are, MLflow paths
/// with ids replaced by `{id}` (and the artifact proxy and static files as one route
/// each), anything unknown as `other`.
fn route_of(path: &str, grpc: bool) -> (&'static str, String) {
    if grpc {
        let known = path.starts_with("/arbor.v1.") || path.starts_with("/grpc.");
        return ("grpc", if known { path.into() } else { "other".into() });
    }
    let path = path
        .strip_prefix("/ajax-api")
        .map_or_else(|| path.to_string(), |rest| format!("/api{rest}"));
    for prefix in [
        "/api/2.0/mlflow-artifacts/artifacts",
        "/static-files",
        "/get-artifact",
    ] {
        if path.starts_with(prefix) {
            let surface = if prefix == "/static-files" {
                "http"
            } else {
                "mlflow"
            };
            return (surface, prefix.into());
        }
    }
    if path.starts_with("/api/2.0/mlflow/") || path == "/graphql" || path == "/version" {
        let parts: Vec<&str> = path
            .split('/')
            .take(8)
            .map(|p| {
                // Ids (experiments, runs, models) have digits; route words do not.
                if p != "2.0" && p.chars().any(|c| c.is_ascii_digit()) {
                    "{id}"
                } else {
                    p
                }
            })
            .collect();
        return ("mlflow", parts.join("/"));
    }
    match path.as_str() {
        "/" | "/health" | "/metrics" | "/api/arbor/v1/stream" | "/api/arbor/v1/backup" => {
            ("http", path)
        }
        _ => ("http", "other".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::route_of;

    #[test]
    fn routes_keep_labels_few() {
        assert_eq!(
            route_of("/arbor.v1.TrackingService/LogBatch", true),
            ("grpc", "/arbor.v1.TrackingService/LogBatch".into())
        );
        assert_eq!(route_of("/evil/path", true), ("grpc", "other".into()));
        assert_eq!(
            route_of("/ajax-api/2.0/mlflow/runs/get", false),
            ("mlflow", "/api/2.0/mlflow/runs/get".into())
        );
        assert_eq!(
            route_of(
                "/api/2.0/mlflow/logged-models/m-0123456789abcdef0123456789abcdef/tags",
                false
            ),
            ("mlflow", "/api/2.0/mlflow/logged-models/{id}/tags".into())
        );
        assert_eq!(
            route_of(
                "/api/2.0/mlflow-artifacts/artifacts/0/abc/artifacts/x",
                false
            ),
            ("mlflow", "/api/2.0/mlflow-artifacts/artifacts".into())
        );
        assert_eq!(
            route_of("/api/2.0/mlflow/metrics/get-history-bulk-interval", false),
            (
                "mlflow",
                "/api/2.0/mlflow/metrics/get-history-bulk-interval".into()
            )
        );
        assert_eq!(route_of("/health", false), ("http", "/health".into()));
        assert_eq!(route_of("/wp-admin.php", false), ("http", "other".into()));
    }
}
