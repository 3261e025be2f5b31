//! The whole HTTP service as one value: the web config (rate limit, basic auth, extra headers)
//! around the route table, behind a type that hides the gateway's type from the server.

use std::future::Future;
use std::sync::Arc;

use axum::extract::Request;
use axum::response::Response;
use futures_util::future::BoxFuture;

use super::routes::dispatch;
use super::state::AppState;
use super::web_config::{with_web_config, SharedWebConfig};
use crate::gateway::Gateway;

/// Builds the HTTP service. The routing is this module's own (`http::routes`, as upstream
/// routes), so the service is a plain function of the request: no router or middleware stack
/// between hyper and it.
pub fn app<G: Gateway>(state: AppState<G>, web: SharedWebConfig) -> App {
    App(Arc::new(Service { state, web }))
}

/// The HTTP service [`app`] builds; clones share it.
#[derive(Clone)]
pub struct App(Arc<dyn Serve>);

impl App {
    /// Answers one request.
    pub fn call(&self, req: Request) -> impl Future<Output = Response> + Send + 'static {
        self.0.clone().serve(req)
    }
}

/// [`Service`] without its gateway type, so that single-node and cluster apps are one type.
trait Serve: Send + Sync + 'static {
    fn serve(self: Arc<Self>, req: Request) -> BoxFuture<'static, Response>;
}

struct Service<G: Gateway> {
    state: AppState<G>,
    web: SharedWebConfig,
}

impl<G: Gateway> Serve for Service<G> {
    fn serve(self: Arc<Self>, req: Request) -> BoxFuture<'static, Response> {
        Box::pin(
            async move { with_web_config(&self.web, req, |req| dispatch(&self.state, req)).await },
        )
    }
}
