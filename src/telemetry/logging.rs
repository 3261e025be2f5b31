//! Logging through `tracing`, in logfmt (the default, like upstream) or JSON.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{FmtSpan, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// `ts=... level=info msg="..." key=value` lines, as upstream's go-kit logger writes them.
struct Logfmt;

fn push_value(out: &mut String, v: &str) {
    let needs_quotes = v.is_empty()
        || v.chars()
            .any(|c| c == ' ' || c == '=' || c == '"' || c.is_control());
    if needs_quotes {
        let _ = write!(out, "{v:?}");
    } else {
        out.push_str(v);
    }
}

struct Fields<'a> {
    msg: Option<String>,
    rest: &'a mut String,
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.msg = Some(value.to_owned());
        } else {
            self.rest.push(' ');
            self.rest.push_str(field.name());
            self.rest.push('=');
            push_value(self.rest, value);
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }
}

impl<S, N> FormatEvent<S, N> for Logfmt
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let now = time::OffsetDateTime::now_utc();
        let mut rest = String::new();
        let mut fields = Fields {
            msg: None,
            rest: &mut rest,
        };
        event.record(&mut fields);
        let mut line = format!(
            "ts={:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z level={}",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second(),
            now.millisecond(),
            event.metadata().level().as_str().to_ascii_lowercase()
        );
        if let Some(m) = fields.msg.take() {
            line.push_str(" msg=");
            push_value(&mut line, &m);
        }
        line.push_str(&rest);
        writeln!(w, "{line}")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Logfmt,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    fn directive(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// Installs the global subscriber; `RUST_LOG` overrides the level for finer filtering.
pub fn init(level: LogLevel, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{lvl},hyper=warn,h2=warn,tower=warn,chitchat=warn",
            lvl = level.directive()
        ))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_span_events(FmtSpan::NONE)
        .with_target(false);
    let result = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Logfmt => builder.with_ansi(false).event_format(Logfmt).try_init(),
    };
    // A second init (tests) keeps the first subscriber.
    let _ = result;
}
