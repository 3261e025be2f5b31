//! The HTTP API, routed like upstream (P = route prefix):
//!
//! | method            | path                                   | success                    |
//! |-------------------|----------------------------------------|----------------------------|
//! | PUT, POST         | `P/metrics/job[@base64]/<job>{/<l>/<v>}` | 200 (202 with the check off) |
//! | DELETE            | same                                   | 202                        |
//! | GET               | `P<telemetry path>`                    | 200 exposition             |
//! | GET               | `P/-/healthy`, `P/-/ready`             | 200 `OK` (ready: 503 until ready) |
//! | PUT, POST         | `P/-/quit`                             | 200, 403 without lifecycle |
//! | GET               | `P/`, `P/status`                       | 200 HTML                   |
//! | GET               | `P/api/v1/status`, `P/api/v1/metrics`  | 200 JSON                   |
//! | OPTIONS           | `P/api/v1/*`                           | 200                        |
//! | PUT               | `P/api/v1/admin/wipe`                  | 202, 404 without admin API |
//!
//! Errors: 400 bad URL or body (upstream's messages), 413 over a size limit, 405 wrong method,
//! 404 unknown path, 301/307 to the cleaned path, 503 when the cluster cannot take a write;
//! from the web config, 401 without valid credentials and 429 over the rate limit.
//!
//! A request goes `server` (accept, TLS) -> `app` -> `web_config` (rate limit, basic auth, extra
//! headers) -> `routes` (path cleaning, route table) -> one of `handlers/`, which answer with the
//! shared replies of `response` and count themselves in `request_metrics`. `state` holds what
//! the handlers share, `grouping` parses the grouping key of a push URL.

mod app;
pub mod conn;
pub mod grouping;
mod handlers;
mod path;
mod request_metrics;
mod response;
mod routes;
pub mod server;
mod state;
pub mod web_config;

pub use app::app;
pub use conn::ServerLimits;
pub use state::{AppState, HttpConfig};
