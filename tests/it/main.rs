//! Integration tests: they drive the real binary on homes built from the
//! captured fixtures, and validate every line against `schemas/`.

mod arch;
mod budget;
mod common;
mod cron;
mod curate;
mod docs;
mod dpo;
mod export;
mod forget_before;
mod hostile;
mod integrity;
mod iot;
mod props;
mod send;
mod shell;
mod soak;
mod stores;
mod summary;
mod threads;
mod tokens;
mod upgrade;
mod validate_dir;
