//! Progress display: operations of a load run, and the cases of the modes
//! that run a list of them (`storage`, `transport`, `cluster`). indicatif draws on stderr only when it is a
//! terminal, so piped output stays clean.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// A spinner with a label, ticking on its own (for a phase of unknown
/// length, like a warm-up).
pub fn spinner(label: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_message(label.to_string());
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// A bar over `cases` cases; the message names the case running.
pub fn cases(label: &str, cases: u64) -> ProgressBar {
    let bar = ProgressBar::new(cases);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix} [{elapsed_precise}] {bar:30} {pos}/{len} cases {msg}",
        )
        .expect("valid template"),
    );
    bar.set_prefix(label.to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// A bar over `total` operations, with their rate and an estimate of the
/// time left.
pub fn ops(label: &str, total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} ops ({per_sec}, eta {eta})",
        )
        .expect("valid template"),
    );
    bar.set_prefix(label.to_string());
    bar
}

/// A bar over a timed phase of `duration`: its position is milliseconds
/// elapsed, its message the operations done so far.
pub fn timed(label: &str, duration: Duration) -> ProgressBar {
    let bar = ProgressBar::new(duration.as_millis() as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{elapsed_precise}] {wide_bar} {msg}")
            .expect("valid template"),
    );
    bar.set_prefix(label.to_string());
    bar
}
