//! The pushgate binary: flags -> logging -> config validation -> bind -> serve.

mod alloc;
mod fd_limit;
mod systemd_socket;

use std::process::ExitCode;

use clap::Parser;
use pushgate::{
    logging, parse_listen_address, Config, ImportArgs, Node, SelfRecorder, SharedWebConfig,
};

fn main() -> ExitCode {
    alloc::tune_allocator();
    let mut args = std::env::args_os();
    if std::env::args_os().nth(1).is_some_and(|a| a == "import") {
        args.next();
        return import(ImportArgs::parse_from(args));
    }
    let cfg = Config::from_command_line();
    logging::init(cfg.log_level, cfg.log_format);
    // As upstream's "starting pushgateway" line: which build a log came from.
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "starting pushgate");
    // Before anything opens a descriptor (the runtime does): those from 3 up are systemd's.
    let inherited = if cfg.systemd_socket {
        match systemd_socket::listeners() {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("pushgate: --web.systemd-socket: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    fd_limit::raise_open_file_limit();
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
    match runtime.block_on(run(cfg, inherited)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pushgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `pushgate import`: one run, its outcome on stdout and stderr and in the exit code.
fn import(args: ImportArgs) -> ExitCode {
    logging::init(logging::LogLevel::Info, logging::LogFormat::Logfmt);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pushgate import: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(pushgate::run_import(args)) {
        Ok(summary) if summary.failed.is_empty() => {
            println!("imported {} groups", summary.groups);
            ExitCode::SUCCESS
        }
        Ok(summary) => {
            for f in &summary.failed {
                eprintln!("pushgate import: {f}");
            }
            println!(
                "imported {} of {} groups; {} failed",
                summary.groups - summary.failed.len(),
                summary.groups,
                summary.failed.len()
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("pushgate import: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `inherited`: the listeners systemd passed (`--web.systemd-socket`), which replace
/// `--web.listen-address` as upstream.
async fn run(cfg: Config, inherited: Option<Vec<std::net::TcpListener>>) -> anyhow::Result<()> {
    let recorder = SelfRecorder::default();
    metrics::set_global_recorder(recorder.clone())
        .map_err(|e| anyhow::anyhow!("cannot install the metrics recorder: {e}"))?;
    let web = match &cfg.web_config_file {
        Some(p) => SharedWebConfig::load(p)?,
        None => SharedWebConfig::disabled(),
    };
    let mut addrs = Vec::new();
    if inherited.is_none() {
        for a in &cfg.listen_addresses {
            addrs.extend(parse_listen_address(a).map_err(anyhow::Error::msg)?);
        }
    }
    let node = Node::build(cfg, recorder)?;
    let listeners = match inherited {
        Some(inherited) => {
            let mut listeners = Vec::new();
            for l in inherited {
                listeners.push(tokio::net::TcpListener::from_std(l)?);
            }
            listeners
        }
        None => bind(addrs).await?,
    };
    spawn_reload_on_sighup(web.clone());
    node.serve(listeners, web, shutdown_signal()).await
}

/// Binds the listen addresses.
async fn bind(addrs: Vec<std::net::SocketAddr>) -> anyhow::Result<Vec<tokio::net::TcpListener>> {
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
    Ok(listeners)
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
