//! Every task logs with its node (issue 13, item 12). A binary of its own:
//! the subscriber is the process's global one, so no other test's thread
//! can race it for tracing's per-callsite interest cache.

use std::sync::{Arc, Mutex};

use rafter_tests::trapped::{a_panic_stops_the_node, arm_state_machine, arm_storage};

/// Log lines written by a `tracing_subscriber::fmt` subscriber.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("not poisoned").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

impl Captured {
    fn line_with(&self, text: &str) -> String {
        let bytes = self.0.lock().expect("not poisoned").clone();
        let all = String::from_utf8(bytes).expect("utf-8 logs");
        all.lines()
            .find(|line| line.contains(text))
            .unwrap_or_else(|| panic!("no log line with {text:?} in:\n{all}"))
            .to_owned()
    }
}

/// Issue 13, item 12: the storage and apply tasks run inside the node's
/// span, so their lines name the node as the driver's do.
#[tokio::test(start_paused = true)]
async fn the_storage_and_apply_tasks_log_with_their_node() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
    let (leader, _) = a_panic_stops_the_node(arm_storage).await;
    let line = captured.line_with("storage task panicked");
    assert!(line.contains(&format!("raft{{id={leader}}}")), "{line}");
    let (leader, _) = a_panic_stops_the_node(arm_state_machine).await;
    let line = captured.line_with("apply task panicked");
    assert!(line.contains(&format!("raft{{id={leader}}}")), "{line}");
}
