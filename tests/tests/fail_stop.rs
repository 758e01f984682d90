//! Fail-stop, never a zombie (issue 13, item 2): a panic in the driver, the
//! storage task or the apply task stops the node. Every waiting call and
//! every later call gets `Stopped`, the metrics say why, `shutdown` returns,
//! and the node restarts on the storage it left.
//!
//! Three nodes on the paused clock; the leader's storage, state machine or
//! network (which only the driver calls) panics on demand.

use rafter_tests::trapped::{
    a_panic_stops_the_node, arm_network, arm_state_machine, arm_storage, panicked_in,
};

#[tokio::test(start_paused = true)]
async fn a_panic_in_the_storage_task_stops_the_node_with_its_reason() {
    let (_, fatal) = a_panic_stops_the_node(arm_storage).await;
    assert!(panicked_in(&fatal, "storage"), "{fatal:?}");
    assert!(
        fatal.to_string().contains("planted panic in the storage"),
        "{fatal}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_panic_in_the_apply_task_stops_the_node_with_its_reason() {
    let (_, fatal) = a_panic_stops_the_node(arm_state_machine).await;
    assert!(panicked_in(&fatal, "apply"), "{fatal:?}");
}

#[tokio::test(start_paused = true)]
async fn a_panic_in_the_driver_stops_the_node_with_its_reason() {
    let (_, fatal) = a_panic_stops_the_node(arm_network).await;
    assert!(panicked_in(&fatal, "driver"), "{fatal:?}");
}
