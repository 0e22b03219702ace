//! Builds a Hermes home from a text capture, for trying the tool by hand:
//!
//!     cargo run --example fixture-home -- fixtures/hermes-0.19.0/home /tmp/hermes-0.19
//!     cargo run -- export --hermes-home /tmp/hermes-0.19 --channel nexus

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [src, dst] = args.as_slice() else {
        anyhow::bail!("usage: fixture-home FIXTURE_HOME_DIR NEW_HERMES_HOME");
    };
    let dst = std::path::Path::new(dst);
    if dst.exists() && std::fs::read_dir(dst)?.next().is_some() {
        anyhow::bail!("{} exists and is not empty", dst.display());
    }
    hermes_harvest::fixture::materialize(std::path::Path::new(src), dst)?;
    eprintln!("built {}", dst.display());
    Ok(())
}
