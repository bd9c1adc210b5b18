//! The admin endpoints on port 9464: `/healthz` (liveness), `/readyz` (the bus and store are
//! reachable and the services have started) and `/metrics` (Prometheus text format).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use vigil_bus::Bus;
use vigil_store::Store;

use crate::Readiness;

/// How long one readiness probe may wait for the bus or the store.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Renders the Prometheus exposition text of the process's metrics.
pub type RenderMetrics = Arc<dyn Fn() -> String + Send + Sync>;

/// What the admin endpoints report on.
#[derive(Clone)]
pub struct AdminState {
    /// The process's bus.
    pub bus: Arc<dyn Bus>,
    /// The process's store.
    pub store: Store,
    /// Whether the services have started.
    pub readiness: Readiness,
    /// Renders `/metrics`.
    pub render_metrics: RenderMetrics,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState")
            .field("bus", &self.bus.kind())
            .field("store", &self.store.backend())
            .field("readiness", &self.readiness)
            .finish()
    }
}

/// The admin router.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Serves the admin router on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AdminState,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AdminState>) -> Response {
    let bus = match tokio::time::timeout(CHECK_TIMEOUT, state.bus.check()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err("bus check timed out".to_owned()),
    };
    let store = match tokio::time::timeout(CHECK_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err("store check timed out".to_owned()),
    };
    let started = state.readiness.is_started();
    let line = |name: &str, result: &Result<(), String>| match result {
        Ok(()) => format!("{name}: ok\n"),
        Err(reason) => format!("{name}: {reason}\n"),
    };
    let mut body = String::new();
    body.push_str(&line("bus", &bus));
    body.push_str(&line("store", &store));
    body.push_str(if started {
        "services: started\n"
    } else {
        "services: not started\n"
    });
    let status = if bus.is_ok() && store.is_ok() && started {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body).into_response()
}

async fn metrics(State(state): State<AdminState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        (state.render_metrics)(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    use vigil_bus::inprocess::InProcessBus;

    async fn state(dir: &tempfile::TempDir) -> AdminState {
        let store = Store::connect(&format!("sqlite://{}/vigil.db", dir.path().display()))
            .await
            .unwrap();
        AdminState {
            bus: Arc::new(InProcessBus::default()),
            store,
            readiness: Readiness::default(),
            render_metrics: Arc::new(|| "vigil_build_info{version=\"0.1.0\"} 1\n".to_owned()),
        }
    }

    async fn get(router: Router, path: &str) -> (StatusCode, String) {
        let response = router
            .oneshot(axum::http::Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn ready_only_once_started() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(&dir).await;
        let app = router(state.clone());
        assert_eq!(
            get(app.clone(), "/healthz").await,
            (StatusCode::OK, "ok\n".into())
        );
        let (status, body) = get(app.clone(), "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("services: not started"), "{body}");
        state.readiness.set_started();
        let (status, body) = get(app.clone(), "/readyz").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, "bus: ok\nstore: ok\nservices: started\n");
        let (status, body) = get(app, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.starts_with("vigil_build_info"));
    }

    #[tokio::test]
    async fn unknown_paths_are_404() {
        let dir = tempfile::tempdir().unwrap();
        let (status, _) = get(router(state(&dir).await), "/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}
