//! The web config file (`--web.config.file`): YAML, TLS settings, headers, bcrypt users, rate
//! limits. Loaded from a file in a directory of this process, as the flag loads it.
#![no_main]
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pushgate::http::web_config::WebConfig;

fn file() -> &'static PathBuf {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("pushgate-fuzz-web-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a directory for the config file");
        dir.join("web.yml")
    })
}

fuzz_target!(|data: &[u8]| {
    std::fs::write(file(), data).expect("the config file written");
    let _ = WebConfig::load(file());
});
