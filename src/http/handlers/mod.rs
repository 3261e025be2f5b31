//! One file per group of routes; each file's doc lists its routes and their status codes.
//! [`super::routes`] decides which of them answers a request.

pub(crate) mod api;
pub(crate) mod delete;
pub(crate) mod import;
pub(crate) mod lifecycle;
pub(crate) mod push;
pub(crate) mod scrape;
pub(crate) mod cluster_page;
pub(crate) mod html;
pub(crate) mod status_groups;
pub(crate) mod status_page;
