//! The seeds a simulation test runs, read from the environment the same way
//! by the engine simulator's tests and the whole-node simulator's.

use std::fmt::{Debug, Display};
use std::time::Instant;

/// The variable `name` as a number, if set; a value that is not one panics
/// with what it was (a test setting, not input to recover from).
pub fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
    })
}

/// With `SIM_SEED` set, runs that seed alone, prints its report and returns
/// 0 (a replay). Otherwise runs `SIM_SEEDS` seeds (default `default_count`)
/// from `SIM_FIRST_SEED` (default 0), hands each report to `tally`, prints
/// progress as `{name}: {done} / {seeds} seeds passed (last {seed}), {time}`
/// every 100 seeds (every 1,000 beyond 10,000), and returns how many ran.
/// A failing seed panics with its failure, which names the seed.
pub fn run_many<R: Debug, E: Display>(
    name: &str,
    default_count: u64,
    mut run: impl FnMut(u64) -> Result<R, E>,
    mut tally: impl FnMut(R),
) -> u64 {
    if let Some(seed) = env_u64("SIM_SEED") {
        match run(seed) {
            Ok(report) => eprintln!("{report:?}"),
            Err(failure) => panic!("{failure}"),
        }
        return 0;
    }
    let seeds = env_u64("SIM_SEEDS").unwrap_or(default_count);
    let first = env_u64("SIM_FIRST_SEED").unwrap_or(0);
    let progress_every = if seeds > 10_000 { 1000 } else { 100 };
    let started = Instant::now();
    for (done, seed) in (first..first.saturating_add(seeds)).enumerate() {
        match run(seed) {
            Ok(report) => tally(report),
            Err(failure) => panic!("{failure}"),
        }
        if (done as u64 + 1) % progress_every == 0 {
            eprintln!(
                "{name}: {} / {seeds} seeds passed (last {seed}), {:.0?}",
                done + 1,
                started.elapsed()
            );
        }
    }
    seeds
}
