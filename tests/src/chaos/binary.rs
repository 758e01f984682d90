//! Which `rafter-kv` binary a run starts: `RAFTER_KV_BIN` if set, else
//! the workspace's debug build, brought up to date with `cargo build -p
//! rafter-kv` when running under cargo (a test or `cargo run`), else the
//! one next to this executable.

use std::path::PathBuf;
use std::process::Command;

const WORKSPACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// The `rafter-kv` binary to run, or why there is none.
pub fn rafter_kv() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("RAFTER_KV_BIN") {
        return Ok(PathBuf::from(path));
    }
    if let Some(cargo) = std::env::var_os("CARGO") {
        let target_dir = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(WORKSPACE).join("target"));
        let mut build = Command::new(cargo);
        // The variables cargo sets for the test or binary running now
        // (package, crate, manifest) would make this build differ from a
        // plain `cargo build -p rafter-kv`, and rebuild crates each time.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            let set_for_us = [
                "CARGO_PKG_",
                "CARGO_CRATE_",
                "CARGO_MANIFEST_",
                "CARGO_BIN_",
            ]
            .iter()
            .any(|prefix| name.starts_with(prefix))
                || name == "CARGO_PRIMARY_PACKAGE";
            if set_for_us {
                build.env_remove(&*name);
            }
        }
        let status = build
            .args(["build", "-p", "rafter-kv", "--bin", "rafter-kv"])
            .env("CARGO_TARGET_DIR", &target_dir)
            .current_dir(WORKSPACE)
            .status()
            .map_err(|e| format!("cargo build -p rafter-kv: {e}"))?;
        if !status.success() {
            return Err(format!("cargo build -p rafter-kv: {status}"));
        }
        return Ok(target_dir.join("debug/rafter-kv"));
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let beside = exe.with_file_name("rafter-kv");
    if beside.exists() {
        Ok(beside)
    } else {
        Err(format!(
            "no rafter-kv next to {} (set RAFTER_KV_BIN)",
            exe.display()
        ))
    }
}
