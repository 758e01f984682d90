//! The Rafter load-testing tool (to come: see the rafter-bench issue).

fn main() {
    eprintln!("rafter-bench: no modes yet");
    std::process::exit(2);
}
