//! Server start-up (placeholder).
pub fn run(_o: crate::RunOpts) -> anyhow::Result<()> { Ok(()) }
pub fn check_config(_f: &std::path::Path, _s: &[String]) -> anyhow::Result<()> { Ok(()) }
