//! What a scrape reads: the merged render of groups collected from several nodes and the
//! stream that carries a render to the client. (A single store's render stays in
//! `store::render`: its cache is store state.)

pub mod merged;
pub mod stream;

pub use stream::{render_whole, stream_rendered, ScrapeStream, SCRAPE_CHUNK_BYTES};
