//! The hosts: one Linux network namespace per node slot, joined by veth
//! pairs to a bridge in the root namespace, where the harness and its
//! clients run. Links between nodes are cut inside each namespace with
//! `iptables-restore` (the namespace's own filter table), so partitions
//! can be one-way; clients reach every node from the root namespace
//! through the bridge and are never cut off.
//!
//! Names carry a slot number `n` taken by creating
//! `/run/rafter-chaos/<n>.pid` (create-new, so two runs never share one):
//! bridge `rkcb<n>`, namespaces `rkc<n>s<i>`, host-side veths
//! `rkc<n>h<i>`, subnet `10.213.<n>.0/24` (bridge `.1`, slot `i` at
//! `.1<i>`). A run removes its own on drop; a new run first removes what
//! a dead run left (its pid file names a process that is gone).
//!
//! Invariant: every command here runs as root on names this module made;
//! nothing outside `rkc*`, the pid files and one `FORWARD` rule per bridge
//! (bridged traffic passes the root namespace's `FORWARD` chain, whose
//! policy Docker sets to DROP) is touched.

use std::fmt;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where runs claim their slot number.
const CLAIMS_DIR: &str = "/run/rafter-chaos";
/// Slot numbers a run may take (concurrent runs on one machine).
const SLOTS_MAX: u32 = 64;

/// Why the hosts could not be made or changed.
#[derive(Debug, thiserror::Error)]
pub enum HostsError {
    /// A command failed (or could not start).
    #[error("`{command}` failed: {detail}")]
    Command { command: String, detail: String },
    /// Every slot number is taken by a live run.
    #[error("all {SLOTS_MAX} chaos network slots are taken by live runs")]
    NoSlot,
    /// The harness is not root (network namespaces need it).
    #[error("network namespaces need root (uid {uid})")]
    NotRoot { uid: u32 },
}

/// One direction of traffic to cut: packets from `from` to `to` are dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cut {
    /// Sending host (slot index).
    pub from: usize,
    /// Receiving host (slot index).
    pub to: usize,
}

impl fmt::Display for Cut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}->{}", self.from, self.to)
    }
}

/// The namespaces and bridge of one run; removed on drop.
///
/// Invariant: `cuts` is what every namespace's filter table holds.
pub struct Hosts {
    slot: u32,
    count: usize,
    cuts: Vec<Cut>,
    removed: bool,
}

impl Hosts {
    /// Makes `count` hosts (at most 9), first removing leftovers of dead runs.
    pub fn create(count: usize) -> Result<Hosts, HostsError> {
        assert!((1..=9).contains(&count), "1..=9 hosts, not {count}");
        let uid = current_uid();
        if uid != 0 {
            return Err(HostsError::NotRoot { uid });
        }
        std::fs::create_dir_all(CLAIMS_DIR).map_err(|e| HostsError::Command {
            command: format!("mkdir {CLAIMS_DIR}"),
            detail: e.to_string(),
        })?;
        remove_leftovers();
        let slot = claim_slot()?;
        let mut hosts = Hosts {
            slot,
            count,
            cuts: Vec::new(),
            removed: false,
        };
        hosts.build()?;
        Ok(hosts)
    }

    fn build(&mut self) -> Result<(), HostsError> {
        let bridge = bridge_name(self.slot);
        run("ip", &["link", "add", &bridge, "type", "bridge"])?;
        let cidr = format!("{}/24", self.bridge_addr());
        run("ip", &["addr", "add", &cidr, "dev", &bridge])?;
        run("ip", &["link", "set", &bridge, "up"])?;
        run("iptables", &forward_rule("-I", &bridge))?;
        for i in 0..self.count {
            let ns = self.namespace(i);
            let veth = veth_name(self.slot, i);
            run("ip", &["netns", "add", &ns])?;
            run(
                "ip",
                &[
                    "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ],
            )?;
            run("ip", &["link", "set", &veth, "master", &bridge, "up"])?;
            let cidr = format!("{}/24", self.addr(i));
            run("ip", &["-n", &ns, "addr", "add", &cidr, "dev", "eth0"])?;
            run("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
            run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    /// How many hosts.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Host `i`'s address.
    pub fn addr(&self, i: usize) -> Ipv4Addr {
        assert!(i < self.count, "host {i} of {}", self.count);
        Ipv4Addr::new(10, 213, self.slot as u8, 11 + i as u8)
    }

    /// The root namespace's address on the bridge (the clients').
    pub fn bridge_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.slot as u8, 1)
    }

    /// Host `i`'s namespace name (for `ip netns exec`).
    pub fn namespace(&self, i: usize) -> String {
        format!("rkc{}s{}", self.slot, i + 1)
    }

    /// A command that runs `program` inside host `i` (`ip netns exec`
    /// execs it, so the child's pid is the program's).
    pub fn command(&self, i: usize, program: &Path) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.namespace(i)])
            .arg(program);
        command
    }

    /// Replaces the cuts in force by `cuts` (empty: heal everything); the
    /// same cuts again change nothing. Each host drops, on input, the
    /// packets of the hosts cut from it, so a one-way cut is a single rule.
    pub fn set_cuts(&mut self, cuts: &[Cut]) -> Result<(), HostsError> {
        let mut cuts = cuts.to_vec();
        cuts.sort();
        cuts.dedup();
        if cuts == self.cuts {
            return Ok(());
        }
        for cut in &cuts {
            assert!(cut.from != cut.to, "a host is never cut from itself");
            assert!(cut.from < self.count && cut.to < self.count, "{cut}");
        }
        for i in 0..self.count {
            let mut rules = String::from("*filter\n:INPUT ACCEPT [0:0]\n");
            rules += ":FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n";
            for cut in cuts.iter().filter(|c| c.to == i) {
                rules += &format!("-A INPUT -s {} -j DROP\n", self.addr(cut.from));
            }
            rules += "COMMIT\n";
            let ns = self.namespace(i);
            run_with_input(
                "ip",
                &["netns", "exec", &ns, "iptables-restore", "-w"],
                &rules,
            )?;
        }
        self.cuts = cuts;
        Ok(())
    }

    /// Packets host `i` dropped so far under the cuts in force (the
    /// counters of its DROP rules; setting cuts resets them).
    pub fn dropped_packets(&self, i: usize) -> Result<u64, HostsError> {
        let ns = self.namespace(i);
        let args = ["netns", "exec", &ns, "iptables-save", "-c", "-t", "filter"];
        let output = Command::new("ip")
            .args(args)
            .output()
            .map_err(|e| HostsError::Command {
                command: format!("ip {}", args.join(" ")),
                detail: e.to_string(),
            })?;
        // Rules read "[packets:bytes] -A INPUT -s ADDR/32 -j DROP".
        Ok(String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|line| line.ends_with("-j DROP"))
            .filter_map(|line| {
                let counters = line.strip_prefix('[')?.split(']').next()?;
                counters.split(':').next()?.parse::<u64>().ok()
            })
            .sum())
    }

    /// Removes the namespaces (killing whatever still runs in them), the
    /// bridge, its rule and the claim. Called by drop; errors are printed.
    pub fn remove(&mut self) {
        if !self.removed {
            self.removed = true;
            remove_slot(self.slot);
        }
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        self.remove();
    }
}

fn bridge_name(slot: u32) -> String {
    format!("rkcb{slot}")
}

/// The host side of host `i`'s veth pair.
fn veth_name(slot: u32, i: usize) -> String {
    format!("rkc{slot}h{}", i + 1)
}

fn forward_rule<'a>(op: &'a str, bridge: &'a str) -> [&'a str; 9] {
    [
        "-w", op, "FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT",
    ]
}

fn claim_path(slot: u32) -> PathBuf {
    Path::new(CLAIMS_DIR).join(format!("{slot}.pid"))
}

/// Takes the first free slot number by creating its claim file.
fn claim_slot() -> Result<u32, HostsError> {
    for slot in 0..SLOTS_MAX {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(claim_path(slot));
        if let Ok(mut file) = file {
            let _ = write!(file, "{}", std::process::id());
            return Ok(slot);
        }
    }
    Err(HostsError::NoSlot)
}

/// Removes the slots of runs that died without cleaning up: a claim whose
/// process is gone, or a bridge with no claim at all.
fn remove_leftovers() {
    for slot in 0..SLOTS_MAX {
        let claim = claim_path(slot);
        let stale = match std::fs::read_to_string(&claim) {
            Ok(pid) => !Path::new(&format!("/proc/{}", pid.trim())).exists(),
            Err(_) => link_exists(&bridge_name(slot)),
        };
        if stale {
            eprintln!("chaos: removing the network left by a dead run (slot {slot})");
            remove_slot(slot);
        }
    }
}

fn link_exists(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Removes everything of `slot`; each step may find nothing to remove.
/// The veth pairs are deleted first, from the root namespace: deleting a
/// namespace frees its devices only later, in the background, and the
/// next run on this slot would find their names taken.
fn remove_slot(slot: u32) {
    for i in 0..9 {
        let veth = veth_name(slot, i);
        if link_exists(&veth) {
            if let Err(e) = run("ip", &["link", "del", &veth]) {
                eprintln!("chaos: {e}");
            }
        }
    }
    let prefix = format!("rkc{slot}s");
    let namespaces = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for ns in namespaces
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| {
            name.strip_prefix(&prefix)
                .is_some_and(|rest| rest.chars().all(|c| c.is_ascii_digit()))
        })
    {
        // Processes left inside (a dead run's nodes) go first.
        if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = run("kill", &["-KILL", pid]);
            }
        }
        let _ = run("ip", &["netns", "del", ns]);
    }
    let bridge = bridge_name(slot);
    while run("iptables", &forward_rule("-D", &bridge)).is_ok() {}
    if link_exists(&bridge) {
        if let Err(e) = run("ip", &["link", "del", &bridge]) {
            eprintln!("chaos: {e}");
        }
    }
    let _ = std::fs::remove_file(claim_path(slot));
}

fn current_uid() -> u32 {
    // /proc/self/status: "Uid:\treal\teffective\t...".
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2))
                .and_then(|uid| uid.parse().ok())
        })
        .unwrap_or(u32::MAX)
}

/// Runs a command to completion; its stderr is the error's detail.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<(), HostsError> {
    run_with_input(program, args, "")
}

fn run_with_input(program: &str, args: &[&str], input: &str) -> Result<(), HostsError> {
    let command = format!("{program} {}", args.join(" "));
    let failed = |detail: String| HostsError::Command {
        command: command.clone(),
        detail,
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| failed(e.to_string()))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|e| failed(e.to_string()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(failed(format!(
            "{}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}
