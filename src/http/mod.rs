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
//! 404 unknown path, 301/307 to the cleaned path, 401 without valid credentials (web config).

pub mod api;
pub mod grouping;
pub mod routes;
pub mod server;
pub mod status_page;
pub mod web_config;

pub use routes::{router, AppState, HttpConfig};
