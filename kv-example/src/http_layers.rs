//! The two tower layers every HTTP request passes: the standing guard
//! (around the router) and the request metrics (around each route).
//!
//! Written as typed services and futures rather than axum's `from_fn`
//! middleware, which boxes each request's future and clones the rest of
//! the router into a `Next` for it: on the put path every allocation is
//! paid once a request, on the node that parses it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::response::Response;
use futures::future::{Either, Ready};
use pin_project_lite::pin_project;
use tokio::sync::watch;
use tower_layer::Layer;
use tower_service::Service;

use crate::membership::{refusal, Standing};
use crate::metrics::{HttpLabels, RouteLabels, RouteName, ServiceMetrics};

/// Counts each request by route and status, and times it by route
/// (`http_requests_total`, `request_seconds`). Goes inside the router
/// (`Router::layer`), where the matched route is known.
#[derive(Debug, Clone)]
pub struct RequestMetricsLayer {
    metrics: Arc<ServiceMetrics>,
}

impl RequestMetricsLayer {
    /// Records into `metrics`.
    pub fn new(metrics: Arc<ServiceMetrics>) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for RequestMetricsLayer {
    type Service = RequestMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestMetrics {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service of [`RequestMetricsLayer`].
#[derive(Debug, Clone)]
pub struct RequestMetrics<S> {
    inner: S,
    metrics: Arc<ServiceMetrics>,
}

impl<S, E> Service<Request> for RequestMetrics<S>
where
    S: Service<Request, Response = Response, Error = E>,
{
    type Response = Response;
    type Error = E;
    type Future = Timed<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let route = RouteName::of(request.extensions().get::<MatchedPath>());
        Timed {
            inner: self.inner.call(request),
            started: Instant::now(),
            route: Some(route),
            metrics: self.metrics.clone(),
        }
    }
}

pin_project! {
    /// A request's response future, recording the request when it ends.
    pub struct Timed<F> {
        #[pin]
        inner: F,
        started: Instant,
        // Taken when recorded.
        route: Option<RouteName>,
        metrics: Arc<ServiceMetrics>,
    }
}

impl<F, E> Future for Timed<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        if let (Ok(response), Some(route)) = (&result, this.route.take()) {
            let elapsed = this.started.elapsed().as_secs_f64();
            let code = response.status().as_u16();
            this.metrics
                .request_seconds
                .get_or_create(&RouteLabels {
                    route: route.clone(),
                })
                .observe(elapsed);
            this.metrics
                .http_requests
                .get_or_create(&HttpLabels { route, code })
                .inc();
        }
        Poll::Ready(result)
    }
}

/// A node that was removed, or has not joined yet, refuses every request
/// but status, digest and metrics at once (`membership::refusal`). Goes
/// around the router.
#[derive(Debug, Clone)]
pub struct StandingGuardLayer {
    standing: watch::Receiver<Standing>,
}

impl StandingGuardLayer {
    /// Guards by the node's standing as `standing` tells it.
    pub fn new(standing: watch::Receiver<Standing>) -> Self {
        Self { standing }
    }
}

impl<S> Layer<S> for StandingGuardLayer {
    type Service = StandingGuard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        StandingGuard {
            inner,
            standing: self.standing.clone(),
        }
    }
}

/// The service of [`StandingGuardLayer`].
#[derive(Debug, Clone)]
pub struct StandingGuard<S> {
    inner: S,
    standing: watch::Receiver<Standing>,
}

impl<S, E> Service<Request> for StandingGuard<S>
where
    S: Service<Request, Response = Response, Error = E>,
{
    type Response = Response;
    type Error = E;
    type Future = Either<Ready<Result<Response, E>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let refused = refusal(&self.standing.borrow(), request.uri().path());
        match refused {
            Some(response) => Either::Left(futures::future::ready(Ok(response))),
            None => Either::Right(self.inner.call(request)),
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::routing::{get, post};
    use axum::Router;

    use super::*;
    use crate::state_machine::ApplyCounters;

    async fn status(app: &mut Router, method: &str, path: &str) -> StatusCode {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .expect("a request");
        futures::future::poll_fn(|cx| Service::<Request>::poll_ready(app, cx))
            .await
            .expect("the router is ready");
        app.call(request).await.expect("infallible").status()
    }

    #[tokio::test]
    async fn requests_are_counted_by_route_and_status_and_timed_by_route() {
        let metrics = Arc::new(ServiceMetrics::new(Arc::new(ApplyCounters::default())));
        let mut app = Router::new()
            .route("/v3/kv/put", post(|| async { "ok" }))
            .route("/kv/{*key}", get(|| async { StatusCode::NOT_FOUND }))
            .layer(RequestMetricsLayer::new(metrics.clone()));
        assert_eq!(status(&mut app, "POST", "/v3/kv/put").await, StatusCode::OK);
        assert_eq!(status(&mut app, "POST", "/v3/kv/put").await, StatusCode::OK);
        assert_eq!(
            status(&mut app, "GET", "/kv/a/b").await,
            StatusCode::NOT_FOUND
        );
        let text = metrics.render();
        for line in [
            r#"rafter_kv_http_requests_total{route="/v3/kv/put",code="200"} 2"#,
            r#"rafter_kv_http_requests_total{route="/kv/{*key}",code="404"} 1"#,
            r#"rafter_kv_request_seconds_count{route="/v3/kv/put"} 2"#,
            r#"rafter_kv_request_seconds_count{route="/kv/{*key}"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        }
    }

    #[tokio::test]
    async fn a_removed_node_refuses_all_but_status_digest_and_metrics() {
        let (standing_tx, standing) = watch::channel(Standing::Member);
        let mut app = Router::new()
            .route("/v3/kv/put", post(|| async { "ok" }))
            .route("/metrics", get(|| async { "ok" }))
            .route("/health", get(|| async { "ok" }))
            .layer(StandingGuardLayer::new(standing));
        assert_eq!(status(&mut app, "POST", "/v3/kv/put").await, StatusCode::OK);
        standing_tx
            .send(Standing::Removed("removed by a test".into()))
            .expect("the guard holds a receiver");
        assert_eq!(
            status(&mut app, "POST", "/v3/kv/put").await,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status(&mut app, "GET", "/health").await,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(status(&mut app, "GET", "/metrics").await, StatusCode::OK);
    }
}
