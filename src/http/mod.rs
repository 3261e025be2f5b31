pub mod web_config;
