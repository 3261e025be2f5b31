//! The pushgate binary: flags -> logging -> config validation -> bind -> serve.

use std::process::ExitCode;

use clap::Parser;
use pushgate::config::{parse_listen_address, Config};
use pushgate::http::web_config::SharedWebConfig;
use pushgate::node::Node;
use pushgate::telemetry::{logging, SelfRecorder};

/// mimalloc instead of glibc's malloc: the push path allocates many small, short-lived objects
/// from two runtime threads; glibc's per-thread arenas fragmented (160 MB resident for a store
/// holding about 60 MB) and its malloc/free showed up as ~20% of push CPU in perf.
#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

/// The global allocator over mimalloc's C API. Unlike the `mimalloc` crate, which sends every
/// request through `mi_malloc_aligned` (its generic aligned path was 6% of a push's instructions
/// under callgrind), requests whose alignment mimalloc's natural alignment already gives use
/// the plain entry points.
struct MiMalloc;

/// Every block `mi_malloc` returns is aligned to this (MI_MAX_ALIGN_SIZE) or to its size,
/// whichever is smaller; Rust layouts have sizes that are multiples of their alignment.
const NATURAL_ALIGN: usize = 16;

fn natural(layout: std::alloc::Layout) -> bool {
    layout.align() <= NATURAL_ALIGN && layout.align() <= layout.size()
}

// SAFETY: every method forwards to the mimalloc function with the same contract; blocks from
// either entry point are freed and resized by mi_free / mi_realloc(_aligned), which accept
// both, and the aligned variants are used whenever the natural alignment does not suffice.
unsafe impl std::alloc::GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        if natural(layout) {
            unsafe { libmimalloc_sys::mi_malloc(layout.size()).cast() }
        } else {
            unsafe { libmimalloc_sys::mi_malloc_aligned(layout.size(), layout.align()).cast() }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        if natural(layout) {
            unsafe { libmimalloc_sys::mi_zalloc(layout.size()).cast() }
        } else {
            unsafe { libmimalloc_sys::mi_zalloc_aligned(layout.size(), layout.align()).cast() }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: std::alloc::Layout) {
        unsafe { libmimalloc_sys::mi_free(ptr.cast()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        // The new layout has the same alignment; natural alignment must hold for the new size.
        if layout.align() <= NATURAL_ALIGN && layout.align() <= new_size {
            unsafe { libmimalloc_sys::mi_realloc(ptr.cast(), new_size).cast() }
        } else {
            unsafe {
                libmimalloc_sys::mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
            }
        }
    }
}

/// `mi_option_purge_delay` in the vendored mimalloc v3 (`mimalloc.h`, `mi_option_e`); the Rust
/// bindings name only the v2 options.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// `mi_option_allow_thp`, likewise.
const MI_OPTION_ALLOW_THP: libmimalloc_sys::mi_option_t = 43;

/// Return freed pages to the OS at once instead of after mimalloc's default delay, unless the
/// operator chose otherwise with `MIMALLOC_PURGE_DELAY`. A scrape of a large store allocates and
/// frees tens of megabytes; with the default delay the pages stay resident (200k series: 155-167
/// MB resident after scrapes instead of 110-117 MB), at no measurable cost per push
/// (docs/benchmarks.md).
///
/// Likewise no transparent huge pages, unless `MIMALLOC_ALLOW_THP` says otherwise: with them a
/// 2 MiB region is resident as soon as one byte of it is touched, and a purge of freed pages
/// inside it splits it or keeps it whole (200k series: 117-120 MB resident after scrapes with
/// them, 98-101 MB without, at no measurable cost per push; docs/benchmarks.md, eighth round).
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets an integer option; mimalloc reads options at any time and accepts any
        // value for this one (0 = purge at once).
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: sets an integer option (0 = mimalloc no longer asks for huge pages on memory
        // it maps from now on).
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ALLOW_THP, 0) };
        // The option alone is read too late: mimalloc reserved its first arena before `main`,
        // with MADV_HUGEPAGE. The process-wide flag makes the kernel back no region of this
        // process with transparent huge pages from now on. A failure leaves THP as it was.
        // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and touches no memory.
        #[cfg(target_os = "linux")]
        unsafe {
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0)
        };
    }
}

fn main() -> ExitCode {
    tune_allocator();
    let cfg = Config::parse();
    logging::init(cfg.log_level, cfg.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pushgate: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pushgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cfg: Config) -> anyhow::Result<()> {
    let recorder = SelfRecorder::default();
    metrics::set_global_recorder(recorder.clone())
        .map_err(|e| anyhow::anyhow!("cannot install the metrics recorder: {e}"))?;
    let web = match &cfg.web_config_file {
        Some(p) => SharedWebConfig::load(p)?,
        None => SharedWebConfig::disabled(),
    };
    let mut addrs = Vec::new();
    for a in &cfg.listen_addresses {
        addrs.extend(parse_listen_address(a).map_err(anyhow::Error::msg)?);
    }
    let node = Node::build(cfg, recorder)?;
    let mut listeners = Vec::new();
    for addr in addrs {
        let l = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            // IPv6 unavailable (some containers): fall back to IPv4 for the "all interfaces" form.
            Err(_) if addr.ip().is_unspecified() && addr.is_ipv6() => {
                let v4 = std::net::SocketAddr::from(([0, 0, 0, 0], addr.port()));
                tokio::net::TcpListener::bind(v4)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot listen on {v4}: {e}"))?
            }
            Err(e) => anyhow::bail!("cannot listen on {addr}: {e}"),
        };
        listeners.push(l);
    }
    spawn_reload_on_sighup(web.clone());
    node.serve(listeners, web, shutdown_signal()).await
}

/// SIGTERM or SIGINT: graceful shutdown with a final persist.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("received SIGTERM, shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("received SIGINT, shutting down"),
    }
}

/// SIGHUP reloads the web config (never a crash, never data loss: upstream bug 7).
fn spawn_reload_on_sighup(web: SharedWebConfig) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match web.reload() {
                Ok(()) => tracing::info!("reloaded web config on SIGHUP"),
                Err(e) => {
                    tracing::error!(err = %e, "web config reload failed; keeping the previous one")
                }
            }
        }
    });
}
