//! Logging through `tracing`, in logfmt (the default, like upstream) or JSON.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{FmtSpan, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// One log line in upstream's shape (go-kit's logger): `ts`, `caller` (file:line), `level`
/// (`debug`, `info`, `warn`, `error`), `msg`, then the event's own fields; as
/// `ts=... caller=... level=info msg="..." key=value` (logfmt, in that order) or one JSON object
/// with its keys sorted, as go-kit's JSON logger writes them.
struct UpstreamFormat {
    json: bool,
}

/// A field's value as recorded: JSON keeps numbers and booleans typed, as go-kit does.
enum Value {
    Str(String),
    Json(serde_json::Value),
}

#[derive(Default)]
struct Fields {
    msg: Option<String>,
    rest: Vec<(&'static str, Value)>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        match (field.name(), value) {
            ("message", Value::Str(s)) => self.msg = Some(s),
            (name, value) => self.rest.push((name, value)),
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::Str(value.to_owned()));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Json(value.into()));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::Json(value.into()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::Json(value.into()));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::Json(value.into()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::Str(format!("{value:?}")));
    }
}

/// go-kit's level names.
fn level_name(level: &tracing::Level) -> &'static str {
    match *level {
        tracing::Level::TRACE | tracing::Level::DEBUG => "debug",
        tracing::Level::INFO => "info",
        tracing::Level::WARN => "warn",
        tracing::Level::ERROR => "error",
    }
}

/// `events.rs:233`: the file's name and line, as go-kit's `caller` (`main.go:100`).
fn caller(meta: &tracing::Metadata<'_>) -> String {
    let file = meta.file().unwrap_or("?");
    let base = file.rsplit(['/', '\\']).next().unwrap_or(file);
    format!("{base}:{}", meta.line().unwrap_or(0))
}

fn timestamp() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.millisecond(),
    )
}

impl UpstreamFormat {
    fn line(&self, meta: &tracing::Metadata<'_>, fields: Fields) -> String {
        let level = level_name(meta.level());
        if self.json {
            let mut obj = std::collections::BTreeMap::new();
            for (k, v) in fields.rest {
                let v = match v {
                    Value::Str(s) => serde_json::Value::String(s),
                    Value::Json(v) => v,
                };
                obj.insert(k.to_owned(), v);
            }
            obj.insert("ts".to_owned(), timestamp().into());
            obj.insert("caller".to_owned(), caller(meta).into());
            obj.insert("level".to_owned(), level.into());
            if let Some(m) = fields.msg {
                obj.insert("msg".to_owned(), m.into());
            }
            // Sorted by key, as go-kit's JSON output (serde_json's own map may keep insertion
            // order, with its `preserve_order` feature).
            return serde_json::to_string(&obj).unwrap_or_default();
        }
        let mut line = format!("ts={} caller={} level={level}", timestamp(), caller(meta));
        if let Some(m) = &fields.msg {
            line.push_str(" msg=");
            push_value(&mut line, m);
        }
        for (k, v) in &fields.rest {
            line.push(' ');
            line.push_str(k);
            line.push('=');
            match v {
                Value::Str(s) => push_value(&mut line, s),
                Value::Json(v) => push_value(&mut line, &v.to_string()),
            }
        }
        line
    }
}

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

impl<S, N> FormatEvent<S, N> for UpstreamFormat
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
        let mut fields = Fields::default();
        event.record(&mut fields);
        writeln!(w, "{}", self.line(event.metadata(), fields))
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
    let json = format == LogFormat::Json;
    let result = builder
        .with_ansi(false)
        .event_format(UpstreamFormat { json })
        .try_init();
    // A second init (tests) keeps the first subscriber.
    let _ = result;
}
